"""The ``digest`` command as an operator uses it: real processes, a real SQLite file and Maildir."""

from __future__ import annotations

import email
import json
import mailbox
import re
import subprocess
import sys
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_environment, document, post

AT = "2026-11-27T17:00"  # an hour after the demo week's cutoff, Amsterdam time


def digest(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = cli_environment(**(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=cwd,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where ``digest demo`` ran once with the embedded defaults."""
    where = tmp_path_factory.mktemp("demo")
    result = digest(where, "demo", "--at", AT)
    assert result.returncode == 0, result.stderr
    (where / "demo.out").write_text(result.stdout)
    return where


def status_json(where: Path) -> dict[str, Any]:
    result = digest(where, "status", "--school", "demo-klimop", "--at", AT, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def outbox(where: Path) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(where / "outbox", create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=default) for k in box.iterkeys()]


def test_demo_fills_the_maildir_with_one_newsletter_per_address(demo_dir: Path):
    report = status_json(demo_dir)
    sent_addresses = {g["address"] for g in report["guardians"] if g["status"] == "sent"}
    mails = outbox(demo_dir)
    assert len(mails) == len(sent_addresses) > 10
    assert {m["To"].addresses[0].addr_spec for m in mails} == sent_addresses


def test_demo_summary_matches_status(demo_dir: Path):
    lines = (demo_dir / "demo.out").read_text().splitlines()
    printed = {
        words[0]: int(words[1])
        for words in (line.split() for line in lines if line.startswith("  "))
    }
    assert printed == status_json(demo_dir)["summary"]
    assert {"sent", "skipped:app", "skipped:per_post", "skipped:unreachable"} <= set(printed)


def test_every_mail_parses_into_text_and_html(demo_dir: Path):
    for mail in outbox(demo_dir):
        parts = [p.get_content_type() for p in mail.walk() if not p.is_multipart()]
        assert parts[:2] == ["text/plain", "text/html"]
        assert "OBS De Klimop" in mail["Subject"] and "48" in mail["Subject"]


def test_running_the_same_week_again_sends_nothing(demo_dir: Path):
    before = len(outbox(demo_dir))
    result = digest(demo_dir, "run", "--school", "demo-klimop", "--at", AT)
    assert result.returncode == 0, result.stderr
    assert "already planned" in result.stdout and "nothing due" in result.stdout
    assert len(outbox(demo_dir)) == before


def test_preview_shows_what_was_sent(demo_dir: Path):
    guardian = next(g for g in status_json(demo_dir)["guardians"] if g["status"] == "sent")
    result = digest(
        demo_dir, "preview", "--guardian", guardian["guardian_id"], "--at", AT, "--format", "eml"
    )
    assert result.returncode == 0, result.stderr
    mail = email.message_from_string(result.stdout, policy=default)
    assert mail["To"].addresses[0].addr_spec == guardian["address"]
    sent = next(
        m for m in outbox(demo_dir) if m["To"].addresses[0].addr_spec == guardian["address"]
    )

    # A signed calendar link carries the second it was signed, so only its token may differ.
    def unsigned(text: str) -> str:
        return re.sub(r"/ics/[\w.-]+\.ics", "/ics/<token>.ics", text)

    preview_text = mail.get_body(("plain",)).get_content()
    assert unsigned(preview_text) == unsigned(sent.get_body(("plain",)).get_content())


def test_preview_of_an_app_reader_warns_and_shows_what_it_would_hold(demo_dir: Path):
    guardian = next(g for g in status_json(demo_dir)["guardians"] if g["reason"] == "app")
    result = digest(
        demo_dir, "preview", "--guardian", guardian["guardian_id"], "--at", AT, "--format", "text"
    )
    assert result.returncode == 0
    assert "warning:" in result.stderr and "prefers app" in result.stderr
    assert "Sinterklaasviering op school" in result.stdout


def test_a_database_without_schema_says_what_to_run(tmp_path: Path):
    result = digest(tmp_path, "import", "-", stdin="{}")
    assert result.returncode == 1
    assert "run `digest db upgrade`" in result.stderr and "Traceback" not in result.stderr


def test_bad_document_is_refused_whole_with_every_error(tmp_path: Path):
    assert digest(tmp_path, "db", "upgrade").returncode == 0
    doc = document(
        schools=[{"id": "s1", "name": "De Schakel", "timezone": "Europe/Amsterdam"}],
        groups=[{"id": "g5", "school_id": "s1", "name": "Groep 5", "kind": "klas"}],
        posts=[post("m1", "g9", "2026-11-24T10:15:00+01:00")],
    )
    result = digest(tmp_path, "import", "-", stdin=json.dumps(doc))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert 'posts[0].group_id: unknown group "g9"' in result.stderr
    assert "groups[0].kind" in result.stderr
    # nothing was written: the school of the refused document does not exist
    assert digest(tmp_path, "plan", "--school", "s1").stderr.strip() == 'error: unknown school "s1"'


def test_wrong_setting_names_the_variable(tmp_path: Path):
    result = digest(tmp_path, "send", env={"DIGEST_MAIL_URL": "smpt://mail.example"})
    assert result.returncode == 1
    assert 'DIGEST_MAIL_URL: unknown scheme "smpt"' in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_school_is_one_line_and_exit_1(tmp_path: Path):
    assert digest(tmp_path, "db", "upgrade").returncode == 0
    result = digest(tmp_path, "plan", "--school", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: unknown school "nope"'


def test_usage_errors_exit_2(tmp_path: Path):
    assert digest(tmp_path, "plan").returncode == 2
    assert digest(tmp_path, "plan", "--school", "s1", "--at", "next friday").returncode == 2


@pytest.mark.parametrize(
    "command", ["db", "import", "plan", "send", "run", "preview", "status", "demo"]
)
def test_every_command_has_help(tmp_path: Path, command: str):
    result = digest(tmp_path, command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout
