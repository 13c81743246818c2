"""The image without a Docker engine: the Dockerfile linted, compose.yaml's commands real, and
the image's entry commands run from a wheel installed in a fresh virtual environment.

The fresh environment gets the service only from the wheel; its dependencies are borrowed from
the test run's own environment through a ``.pth`` file, so no network is needed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from digest.cli import main

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).with_name("hadolint")
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
ROLES = {"web": ["serve"], "scheduler": ["scheduler"], "worker": ["worker"]}


def parse_digest_command(args: list[str]) -> click.Command:
    """Resolve ``args`` (after ``digest``) to its command and parse its options, as click would.

    A misspelt command or option raises a click usage error.
    """
    ctx = click.Context(main, info_name="digest")
    command: click.Command | None = main
    rest = list(args)
    while isinstance(command, click.Group):
        name, *rest = rest
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r} in {args}"
    command.make_context(command.name, rest, parent=ctx)
    return command


def dockerfile_instruction(name: str) -> str:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.*)$", text, re.M)
    assert found, f"no {name} in the Dockerfile"
    return str(found[-1])


# --- the Dockerfile --------------------------------------------------------------------------


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_slim_and_not_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and stages[-1] == "python:3.11-slim"
    final = text.split("\nFROM ")[-1]
    assert "COPY --from=builder" in final
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final)
    user = dockerfile_instruction("USER")
    assert user.split(":")[0] not in ("root", "0")


def test_the_image_entry_and_health_commands_are_real_digest_commands():
    entrypoint = json.loads(dockerfile_instruction("ENTRYPOINT"))
    cmd = json.loads(dockerfile_instruction("CMD"))
    assert entrypoint == ["digest"]
    assert parse_digest_command(cmd).name == "serve"
    health = json.loads(dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    assert health[0] == "digest" and parse_digest_command(health[1:]).name == "healthcheck"


# --- compose.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def test_compose_has_postgres_migrate_web_scheduler_and_two_workers(compose):
    services = compose["services"]
    assert set(services) >= {"db", "migrate", "web", "scheduler", "worker"}
    db = services["db"]
    assert db["image"].startswith("postgres")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["scheduler"]["command"] == ["scheduler", "--no-worker"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("web", "scheduler", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["db"]["condition"] == "service_healthy", name


def test_every_compose_command_and_health_check_is_a_real_digest_command(compose):
    for name, service in compose["services"].items():
        if name == "db":
            continue
        parse_digest_command(service["command"])  # raises on a wrong command or option
        if name == "migrate":
            continue
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "digest"], name
        parse_digest_command(test[2:])
        role = test[test.index("--role") + 1]
        assert service["command"][0] == ROLES[role][0], f"{name} checks the {role}'s health"


def test_compose_takes_secrets_from_the_environment(compose):
    env = compose["services"]["web"]["environment"]
    for variable in ("DIGEST_SECRET_KEY", "DIGEST_API_TOKEN", "DIGEST_DATABASE_URL"):
        value = env[variable]
        assert "${" in value, f"{variable} is hard-coded"
        default = re.findall(r"\$\{\w+:-([^}]*)\}", value)
        assert all(d.startswith("dev-only") for d in default), f"{variable}: {default}"


# --- the entry commands from a wheel, in a fresh virtual environment -------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel; dependencies borrowed from this environment."""
    where = tmp_path_factory.mktemp("image")
    subprocess.run(
        [*PIP_WHEEL, "-w", str(where / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (where / "dist").glob("school_digest-*.whl")
    env_dir = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # After the install, so pip saw none of the borrowed packages.
    (Path(own) / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


@pytest.fixture
def run(venv: Path, tmp_path: Path) -> Iterator[Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "PYTHON"))}
    env["DIGEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'digest.db'}"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    started: list[subprocess.Popen[str]] = []

    def digest(*args: str, background: bool = False) -> Any:
        command = [str(venv / "bin" / "digest"), *args]
        if background:
            process = subprocess.Popen(
                command,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            return process
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    yield digest
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def wait_until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_the_wheel_brings_its_own_code_and_templates(venv: Path):
    shown = subprocess.run(
        [venv / "bin" / "python", "-c", "import digest, scheduler; print(digest.__file__)"],
        cwd=venv,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.startswith(str(venv)), shown
    assert list(Path(shown.strip()).parent.joinpath("templates").iterdir())


def test_help_upgrade_and_a_worker_healthcheck_without_a_worker(run):
    shown = run("--help")
    assert shown.returncode == 0
    for command in ("serve", "scheduler", "worker", "healthcheck", "purge", "db"):
        assert re.search(rf"^\s+{command}\s", shown.stdout, re.M), command
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database is up to date" in upgraded.stdout
    check = run("healthcheck", "--role", "worker")
    assert check.returncode == 1
    assert "no worker heartbeat" in check.stderr and "digest worker" in check.stderr


def test_a_worker_is_healthy_while_it_runs_and_gone_after_sigterm(run):
    assert run("db", "upgrade").returncode == 0
    worker = run("worker", "--poll", "0.5", background=True)
    wait_until(lambda: run("healthcheck", "--role", "worker").returncode == 0, "a heartbeat")
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert run("healthcheck", "--role", "worker").returncode == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_healthz_and_the_web_healthcheck(run):
    assert run("db", "upgrade").returncode == 0
    port = free_port()
    server = run("serve", "--host", "127.0.0.1", "--port", str(port), background=True)
    url = f"http://127.0.0.1:{port}/healthz"

    def answered() -> Any:
        assert server.poll() is None, server.communicate()[1]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            return None

    status, body = wait_until(answered, "digest serve")
    assert status == 200 and body["status"] == "ok" and body["database"] == "ok"
    check = run("healthcheck", "--role", "web", "--url", url)
    assert check.returncode == 0, check.stderr
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=30)
    after = run("healthcheck", "--role", "web", "--url", url)
    assert after.returncode == 1 and "did not answer" in after.stderr, shlex.join(after.args)
