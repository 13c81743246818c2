"""``digest worker`` as an operator runs it: real processes, a real SMTP server, a shared outbox.

``--once`` drains what is due and exits; a running worker stops on SIGTERM after the sends in
flight, leaving every row final or back in the queue; on PostgreSQL two workers and a concurrent
``digest run`` share one outbox and deliver each address exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import child, cli_environment, document, group, guardian, on_event_loop, post, school
from smtp_server import SmtpServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import Deliverer, claim
from digest.ingest import import_document
from digest.models import Delivery, DeliveryStatus, Edition, EditionStatus
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.render import Renderer
from digest.settings import load_settings
from digest.transports import open_transport
from digest.worker import WorkerReport, run_loop, run_worker

AT = "2026-11-27T16:00"  # the week's cutoff, Amsterdam time
CUTOFF = parse_instant(AT, "Europe/Amsterdam")
FINAL = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED, DeliveryStatus.SKIPPED)
SENDER = "nieuwsbrief@digest.example"
SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


def newsletter_school(count: int) -> dict[str, Any]:
    return document(
        schools=[school()],
        groups=[group("gs", kind="school", name="De Schakel"), group("g5", name="Groep 5")],
        children=[child(f"c{n:03d}", ["g5"]) for n in range(count)],
        guardians=[guardian(f"p{n:03d}", [f"c{n:03d}"]) for n in range(count)],
        posts=[post("m1", "g5", "2026-11-24T10:15:00+01:00", title="Excursie naar het bos")],
    )


def addresses(count: int) -> list[str]:
    return [f"p{n:03d}@ouders.example" for n in range(count)]


def load(sessions: sessionmaker[Session], count: int, *, plan: bool = True) -> None:
    with sessions() as session, session.begin():
        import_document(session, newsletter_school(count))
        if plan:
            plan_edition(session, "s1", CUTOFF)


def statuses(sessions: sessionmaker[Session]) -> dict[str, tuple[DeliveryStatus, int]]:
    """(status, attempts) of every outbox row, by address."""
    with sessions() as session:
        return {
            row.address: (row.status, row.attempts) for row in session.scalars(select(Delivery))
        }


def received(server: SmtpServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def environment(db_url: str, server: SmtpServer, **extra: str) -> dict[str, str]:
    return cli_environment(
        DIGEST_DATABASE_URL=db_url,
        DIGEST_MAIL_URL=server.url(),
        DIGEST_MAIL_FROM=SENDER,
        **extra,
    )


def start(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes the test starts; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@functools.cache
def renderer() -> Renderer:
    """One renderer for the in-process sends: building one compiles every template."""
    return Renderer(load_settings(mail_url="null://", mail_from=SENDER))


def drain(sessions: sessionmaker[Session], server: SmtpServer, at: datetime) -> WorkerReport:
    """``digest worker --once --at``, in this process."""
    settings = load_settings(mail_url=server.url(), mail_from=SENDER)

    async def once() -> WorkerReport:
        transport = open_transport(settings.mail_url)
        deliverer = Deliverer(sessions, transport, settings, renderer())
        return await run_worker(sessions, settings, once=True, at=at, deliverer=deliverer)

    return on_event_loop(once())


def sent_count(stdout: str) -> int:
    """The number of sent mails in a worker's or ``digest send``'s closing line."""
    found = re.search(r"(\d+) sent\b", stdout)
    return int(found.group(1)) if found else 0


# --- one worker ----------------------------------------------------------------------------


def worker_once(cwd: Path, env: dict[str, str], at: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", "worker", "--once", "--at", at],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@SQLITE_ONLY
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_worker_once_drains_what_is_due_and_exits_0(
    sessions, db_url: str, smtp_server: SmtpServer, tmp_path: Path, event_loop: str
):
    load(sessions, 5)
    env = environment(db_url, smtp_server, DIGEST_EVENT_LOOP=event_loop)
    result = worker_once(tmp_path, env, AT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "worker done after 1 pass(es): 5 sent"
    assert received(smtp_server) == Counter(addresses(5))
    assert set(statuses(sessions).values()) == {(DeliveryStatus.SENT, 1)}
    with sessions() as session:
        assert session.scalars(select(Edition.status)).one() is EditionStatus.DONE


async def running_loop() -> str:
    """The running event loop's class, by module and name."""
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


@pytest.mark.parametrize(
    ("event_loop", "runs_on"), [("uvloop", "uvloop.Loop"), ("asyncio", "asyncio.unix_events")]
)
def test_the_delivering_loop_is_the_configured_one(event_loop: str, runs_on: str):
    settings = load_settings(event_loop=event_loop)
    assert run_loop(running_loop(), settings).startswith(runs_on)


def test_without_uvloop_the_default_runs_on_asyncios_loop_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows: `import uvloop` fails
    with caplog.at_level("INFO", logger="digest.worker"):
        runs_on = run_loop(running_loop(), load_settings(event_loop="uvloop"))
    assert runs_on.startswith("asyncio")
    assert "uvloop is not installed here" in caplog.text


def test_an_unknown_event_loop_is_refused_naming_the_variable(tmp_path: Path):
    result = worker_once(tmp_path, cli_environment(DIGEST_EVENT_LOOP="trio"), AT)
    assert result.returncode == 1
    assert "DIGEST_EVENT_LOOP" in result.stderr
    assert "Traceback" not in result.stderr


@SQLITE_ONLY
def test_sigterm_finishes_the_sends_in_flight_and_leaves_no_row_sending(
    sessions, db_url: str, smtp_server: SmtpServer, tmp_path: Path
):
    everyone = addresses(20)
    load(sessions, len(everyone))
    smtp_server.delays["DATA"] = 0.2  # each mail takes a while: some are always in flight
    env = environment(db_url, smtp_server, DIGEST_SEND_CONCURRENCY="2")

    with processes() as started:
        worker = start(tmp_path, env, "worker", "--poll", "0.2")
        started.append(worker)
        wait_for(lambda: len(smtp_server.messages) >= 3, 60, "the first mails")
        worker.send_signal(signal.SIGTERM)
        stdout, stderr = worker.communicate(timeout=15)
    assert worker.returncode == 0, stderr
    assert stdout.startswith("worker done after") and "Traceback" not in stderr

    rows = statuses(sessions)
    sent = {a for a, (status, _) in rows.items() if status is DeliveryStatus.SENT}
    waiting = {a for a, (status, _) in rows.items() if status is DeliveryStatus.QUEUED}
    assert sent | waiting == set(everyone)  # none left ``sending``, none failed
    assert waiting, "the worker stopped only after sending everything"
    assert received(smtp_server) == Counter(sent)  # what went is recorded, what is queued did not
    assert sent_count(stdout) == len(sent)
    assert all(rows[a] == (DeliveryStatus.QUEUED, 0) for a in waiting)

    # The next worker sends the rest, and nothing twice.
    smtp_server.delays.clear()
    report = drain(sessions, smtp_server, CUTOFF)
    assert report.counts == {"sent": len(waiting)}
    assert received(smtp_server) == Counter(everyone)


@SQLITE_ONLY
def test_a_replay_at_another_instant_leaves_rows_leased_by_a_running_worker(
    sessions, smtp_server: SmtpServer
):
    everyone = addresses(4)
    load(sessions, len(everyone))
    renderer()  # built before the lease starts: it takes a second or two
    now = datetime.now(UTC)
    lease = timedelta(seconds=3)
    with sessions() as session, session.begin():
        # A running worker has just claimed two rows and is sending them.
        held = claim(session, now, 2, lease=lease)
    with sessions() as session:
        in_flight = {session.get_one(Delivery, i).address for i in held}

    # An operator replays other instants meanwhile: the leased rows are not theirs to send.
    for at in (now - timedelta(days=1), now + timedelta(days=1)):
        drain(sessions, smtp_server, at)
    assert received(smtp_server) == Counter(set(everyone) - in_flight)
    rows = statuses(sessions)
    assert {rows[a][0] for a in in_flight} == {DeliveryStatus.SENDING}

    # The worker died: once its lease has run out (on the real clock) the rows are sent.
    time.sleep(max((now + lease - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    assert drain(sessions, smtp_server, now).counts == {"sent": 2}
    assert received(smtp_server) == Counter(everyone)


# --- many senders, one outbox (PostgreSQL) -------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_two_workers_and_a_concurrent_run_deliver_each_address_exactly_once(
    sessions, db_url: str, smtp_server: SmtpServer, tmp_path: Path
):
    everyone = addresses(300)
    load(sessions, len(everyone), plan=False)  # ``digest run`` plans while the workers poll
    # Batches of 100, so the three processes have three to share.
    env = environment(db_url, smtp_server, DIGEST_SEND_CONCURRENCY="4", DIGEST_SEND_BATCH="100")

    def open_rows() -> int:
        with sessions() as session:
            done = Delivery.status.in_(FINAL)
            return int(session.scalar(select(func.count()).where(~done)) or 0)

    def all_planned_and_final() -> bool:
        with sessions() as session:
            planned = session.scalar(select(func.count()).select_from(Delivery)) or 0
        return planned == len(everyone) and open_rows() == 0

    with processes() as started:
        workers = [start(tmp_path, env, "worker", "--poll", "0.2") for _ in range(2)]
        started.extend(workers)
        run = start(tmp_path, env, "run", "--school", "s1", "--at", AT)
        started.append(run)
        run_out, run_err = run.communicate(timeout=120)
        assert run.returncode == 0, run_err
        wait_for(all_planned_and_final, 120, "every row to be sent")
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=15) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err

    assert received(smtp_server) == Counter(everyone)  # every address, exactly once
    assert set(statuses(sessions).values()) == {(DeliveryStatus.SENT, 1)}
    by_process = [sent_count(out) for out, _ in outputs] + [sent_count(run_out)]
    assert sum(by_process) == len(everyone), (by_process, run_out)
    assert all(by_process[:2]), f"a worker sent nothing: {by_process}"
