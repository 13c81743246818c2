"""``digest worker``: drain the outbox until stopped; any number of them may share one database.

SIGTERM (or SIGINT) lets the sends in flight finish, gives the claimed rows that did not start
back to the queue, and exits. ``once`` drains what is due now and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import Deliverer, SendReport, count_due
from digest.dkim import Signer
from digest.heartbeat import Pulse
from digest.settings import Settings
from digest.transports import open_transport

log = logging.getLogger(__name__)

T = TypeVar("T")

# Container objects allocated between two collections of the youngest generation (CPython's
# default is 700). Delivering allocates many short-lived ones per mail (rows, contents, pages):
# at 700, the collector took about 6 % of an edition's CPU; at this, under 3 % (README,
# "Decisions").
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_collector() -> None:
    """Collect the youngest generation less often: for a process that delivers mail."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_COLLECTION_THRESHOLD), middle, old)


def run_loop(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Run ``main`` to its end on the configured event loop (``DIGEST_EVENT_LOOP``).

    uvloop by default: the deliverer's event loop drives eight SMTP dialogues, and on uvloop a
    dialogue costs about a fifth less CPU (README, "Decisions"). Where uvloop is not installed
    (it has no Windows build), asyncio's own loop runs it.
    """
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed here: running on asyncio's event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


@dataclass
class WorkerReport:
    """Everything one worker process did, by final row status, over all its passes."""

    counts: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    paused: str | None = None
    stopped: bool = False

    def add(self, report: SendReport) -> None:
        for status, count in report.counts.items():
            self.counts[status] = self.counts.get(status, 0) + count
        self.passes += 1
        self.paused = report.paused
        self.stopped = self.stopped or report.stopped


def open_deliverer(sessions: sessionmaker[Session], settings: Settings) -> Deliverer:
    """A deliverer on the configured transport, with DKIM signing when a key is configured.

    The process that opens one delivers mail: its collector is tuned for that (``tune_collector``).
    """
    tune_collector()
    transport = open_transport(
        settings.mail_url,
        pool_size=settings.send_concurrency,
        deadline=settings.send_deadline_seconds,
    )
    return Deliverer(sessions, transport, settings, signer=_signer(settings))


def _signer(settings: Settings) -> Callable[[bytes], bytes] | None:
    signer = Signer.from_settings(settings)  # a bad key stops start-up, naming the variable
    return signer.sign if signer is not None else None


async def run_worker(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    once: bool = False,
    at: datetime | None = None,
    poll: float = 5.0,
    school_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    deliverer: Deliverer | None = None,
) -> WorkerReport:
    """Send due rows pass after pass; with ``once`` stop when nothing is due (or paused)."""
    deliverer = deliverer or open_deliverer(sessions, settings)
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("worker stopping: finishing the sends in flight")
        deliverer.stop()
        wake.set()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    report = WorkerReport()
    pulse = Pulse(sessions, "worker")

    def advance(done: int) -> None:
        # A long burst beats from inside the pass; the pulse writes at most every 15 s.
        pulse.beat()
        if progress is not None:
            progress(done)

    try:
        while not deliverer.stopping:
            pulse.beat()
            now = at or datetime.now(UTC)
            result = await deliverer.run(now, school_id=school_id, progress=advance)
            report.add(result)
            if deliverer.stopping:
                break
            if once:
                if result.paused is not None or not _due_now(sessions, now, school_id):
                    break
                continue
            if result.counts:
                continue  # more may have become due while this pass ran
            delay = poll
            if result.paused_until is not None:
                delay = max(poll, (result.paused_until - datetime.now(UTC)).total_seconds())
            wake.clear()
            # A long wait (a paused transport) is cut in slices, so the heartbeat stays fresh.
            until = loop.time() + delay
            while not wake.is_set() and (left := until - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(left, pulse.every))
                pulse.beat()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        pulse.stop()
        await deliverer.transport.close()
    report.stopped = deliverer.stopping
    return report


def _due_now(sessions: sessionmaker[Session], at: datetime, school_id: str | None) -> bool:
    with sessions() as session:
        return count_due(session, at, school_id) > 0
