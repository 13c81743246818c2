"""The log of a whole run, as an operator collects it: JSON lines with ids, never a parent's data.

A demo week goes out through a real SMTP server (one address refused, one deferred), then the
per-post mails, a worker pass, next week's run, a purge and the web face answering the links
from the mails. Every line on standard error must be a JSON object with the fields, and none may
hold a guardian's address or name, a signed token from the mails, a post's title or text, or a
configured secret.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_environment
from smtp_server import SmtpServer

from digest.demo import SCHOOL_ID, demo_document
from digest.logs import redact
from digest.periods import latest_cutoff, parse_instant

AT = "2026-11-27T17:00"
NEXT_WEEK = "2026-12-04T17:00"
ZONE = "Europe/Amsterdam"
SECRET_KEY = "log-test-secret-key-4f9a1c7e2b"
API_TOKEN = "log-test-api-token-8d2e6b0a"
FIELDS = {"time", "level", "logger", "message"}


def environment(tmp_path: Path, server: SmtpServer) -> dict[str, str]:
    return cli_environment(
        DIGEST_LOG_FORMAT="json",
        DIGEST_DATABASE_URL=f"sqlite:///{tmp_path / 'digest.db'}",
        DIGEST_MAIL_URL=server.url(),
        DIGEST_MAIL_FROM="nieuwsbrief@digest.example",
        DIGEST_SECRET_KEY=SECRET_KEY,
        DIGEST_API_TOKEN=API_TOKEN,
        DIGEST_MEDIA_CACHE_DIR=str(tmp_path / "media-cache"),
    )


def digest(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "-v", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_and_follow(env: dict[str, str], cwd: Path, links: list[str]) -> str:
    """Start ``digest serve``, ask /healthz and the mails' links, stop it; its standard error."""
    port = free_port()
    env = {**env, "DIGEST_BASE_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "-v", "serve", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    assert response.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "digest serve did not answer /healthz"
                assert process.poll() is None, "digest serve stopped"
                time.sleep(0.3)
        for link in links:
            path = link.split("://", 1)[1].split("/", 1)[1]
            # What the page says does not matter here, only what the log says.
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"{base}/{path}", timeout=10).close()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    return stderr


def mail_links(server: SmtpServer) -> list[str]:
    """The signed links of the mails the server accepted (preferences, unsubscribe, media)."""
    found: set[str] = set()
    for message in server.messages:
        text = message.content.decode("utf-8", "replace").replace("=\r\n", "")
        found.update(
            re.findall(r"https?://[^\s\"'<>]+/(?:p|u|media|gallery|ics)/[^\s\"'<>]+", text)
        )
    return sorted(found)


def tokens(links: list[str]) -> set[str]:
    return {link.rstrip("/").rsplit("/", 1)[1].removesuffix(".ics") for link in links}


def private_strings(links: list[str]) -> set[str]:
    """What must never be logged: addresses, names, tokens, post titles and text, secrets."""
    cutoff = latest_cutoff(parse_instant(AT, ZONE), weekday=4, clock="16:00", zone=ZONE)
    weeks = [demo_document(cutoff), demo_document(cutoff + timedelta(days=7))]
    secret: set[str] = {SECRET_KEY, API_TOKEN, *tokens(links)}
    for doc in weeks:
        for guardian in doc["guardians"]:
            if guardian.get("email"):
                secret |= {guardian["email"], guardian["email"].lower()}
            secret.add(guardian["name"])
        for post in doc["posts"]:
            secret.add(post["title"])
            text = html.unescape(re.sub(r"<[^>]+>", " ", post.get("body_html", "")))
            secret |= {chunk.strip() for chunk in re.split(r"[.:]", text) if len(chunk) > 15}
    return {s for s in secret if len(s) >= 6}


def parse_lines(stderr: str, command: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{command}: a log line that is not JSON: {line[:200]}")
        assert isinstance(entry, dict) and set(entry) >= FIELDS, f"{command}: {line[:200]}"
        lines.append(entry)
    return lines


def test_a_whole_run_logs_json_lines_without_addresses_tokens_or_post_text(
    tmp_path: Path, smtp_server: SmtpServer
):
    env = environment(tmp_path, smtp_server)
    cutoff = latest_cutoff(parse_instant(AT, ZONE), weekday=4, clock="16:00", zone=ZONE)
    guardians = [g for g in demo_document(cutoff)["guardians"] if g.get("email")]
    refused, deferred = guardians[0]["email"].lower(), guardians[1]["email"].lower()
    smtp_server.rcpt_replies[refused] = f"550 5.1.1 <{refused}>: no such user here"
    smtp_server.rcpt_replies[deferred] = f"451 4.2.0 <{deferred}>: mailbox busy, try later"

    outputs: dict[str, str] = {}
    runs = {
        "demo": ("demo", "--at", AT),
        "notify": ("notify", "--at", AT, "--no-send"),
        "worker": ("worker", "--once", "--at", AT),
        "run": ("run", "--school", SCHOOL_ID, "--at", NEXT_WEEK),
        "purge": ("purge", "--dry-run"),
    }
    for name, args in runs.items():
        result = digest(env, tmp_path, *args)
        outputs[name] = result.stderr
        outputs[f"{name} (stdout)"] = result.stdout
    links = mail_links(smtp_server)
    assert any("/u/" in link for link in links), "the mails carry unsubscribe links"
    outputs["serve"] = serve_and_follow(env, tmp_path, links)

    entries = []
    for name, text in outputs.items():
        if "(stdout)" not in name:
            entries += parse_lines(text, name)
    messages = " ".join(e["message"] for e in entries)
    assert "sent" in messages and "not accepted" in messages, "the run was logged at all"
    assert any(e.get("delivery_id") for e in entries), "ids travel as their own fields"
    assert any(e["logger"].startswith("uvicorn") for e in entries), "the web's access log too"

    everything = "\n".join(outputs.values())
    leaked = sorted(s for s in private_strings(links) if s in everything)
    assert not leaked, f"in the log: {leaked[:5]}"


def test_the_redaction_masks_addresses_and_tokens_left_in_a_message():
    line = (
        "GET /u/WyJwMSJd.Zk3hQmPq0bWcL2vTn8xYr5sA1dE HTTP/1.1 to F.Yilmaz@Example.org "
        "token InsxIn0.aQ8rT5yU1iO3pA7sD9fG2hJ4kL6zX0cV"
    )
    assert redact(line) == "GET /u/<token> HTTP/1.1 to <address> token <token>"
    assert redact("edition 12 of school s1 planned: 40 mails") == (
        "edition 12 of school s1 planned: 40 mails"
    )
