"""``digest scheduler``: APScheduler 3 decides *when*; ``scheduler.jobs`` does the work.

Jobs and where they live:

- ``edition:<school id>``: a weekly cron job at the school's ``digest_weekday`` and
  ``digest_time`` in its own time zone, in the SQLAlchemy job store in the service's database, so a
  run that was due while the service was down fires once when it comes back (within
  ``DIGEST_MISFIRE_GRACE_HOURS``; beyond it, an alert). Its trigger is replaced only when the
  school's settings change (an import), never on a restart: that would forget a missed run.
- ``sync`` (every minute, in memory): brings the edition jobs in line with the schools.
- ``notify`` (every ``DIGEST_NOTIFY_INTERVAL_SECONDS``, in memory): queues per-post mails.
- ``deliver`` (every ``DIGEST_RETRY_INTERVAL_SECONDS``, in memory, only with the embedded worker):
  sends what is due, retries included; an edition or notify run starts it at once.
- ``heartbeat`` (every 15 s, in memory): the scheduler's sign of life for ``/healthz``.
- ``retention`` (daily at 03:30 UTC, in memory): purges what is older than
  ``DIGEST_RETENTION_DAYS`` (``digest.retention``).

The interval jobs belong to this process, so they stay out of the shared store. APScheduler 3
cannot share a job store between processes; two schedulers started by mistake both fire, and
the edition's unique key with the school row's lock turn the second run into a no-op.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from babel.dates import format_datetime
from sqlalchemy import Engine, Table, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import Deliverer
from digest.heartbeat import Pulse
from digest.models import AlertKind, School
from digest.periods import WEEKDAYS
from digest.plan import in_holiday
from digest.settings import Settings
from scheduler import jobs

log = logging.getLogger(__name__)

EDITION_PREFIX = "edition:"
RETRY_PREFIX = "edition-retry:"
SYNC_SECONDS = 60.0
HEARTBEAT_SECONDS = 15.0
RUN_FAILED_RETRY = timedelta(minutes=5)
JOB_TABLE = "apscheduler_jobs"
# Schools planned at once when their weekly runs are due together (a board's Friday): more
# would only take turns for the interpreter, each holding its school's data meanwhile.
PLANNERS = 2


def edition_job_id(school_id: str) -> str:
    return f"{EDITION_PREFIX}{school_id}"


def edition_trigger(school: School) -> CronTrigger:
    """The school's weekly cutoff as a cron trigger in its own time zone."""
    hour, minute = (int(part) for part in school.digest_time.split(":"))
    return CronTrigger(
        day_of_week=WEEKDAYS[school.digest_weekday][:3],
        hour=hour,
        minute=minute,
        second=0,
        timezone=ZoneInfo(school.timezone),
    )


def _same_trigger(a: Any, b: CronTrigger) -> bool:
    return isinstance(a, CronTrigger) and str(a) == str(b) and str(a.timezone) == str(b.timezone)


# --- the runtime the job functions reach -------------------------------------------------------


@dataclass
class Runtime:
    """What the job entry points need; one per scheduler process (set by ``serve``)."""

    sessions: sessionmaker[Session]
    settings: Settings
    scheduler: BaseScheduler
    deliverer: Deliverer | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    delivering: asyncio.Lock = field(default_factory=asyncio.Lock)
    again: bool = False
    pulse: Pulse | None = None
    # The weekly runs' threads. Not the event loop's default executor, where APScheduler runs
    # the other synchronous jobs and the worker commits (asyncio.to_thread) and looks up host
    # names: a Friday's plans, queued there, kept all of those waiting behind them.
    planners: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(PLANNERS, thread_name_prefix="plan")
    )

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.settings.misfire_grace_hours)

    def kick(self) -> None:
        """Start the embedded worker's ``deliver`` job now (no-op without it)."""
        if self.deliverer is not None and self.scheduler.get_job("deliver") is not None:
            self.scheduler.modify_job("deliver", next_run_time=datetime.now(UTC))


_runtime: Runtime | None = None


def _current() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the scheduler's runtime is not set up (scheduler.service.serve)")
    return _runtime


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


# Entry points, referenced by name from the job store ("scheduler.service:weekly_edition").


async def weekly_edition(school_id: str) -> None:
    """Plan the school's edition due now, in one of the planning threads; the worker sends it."""
    runtime = _current()
    plan = functools.partial(
        jobs.run_scheduled_edition,
        runtime.sessions,
        school_id,
        runtime.clock(),
        grace=runtime.grace,
    )
    run = await asyncio.get_running_loop().run_in_executor(
        runtime.planners, functools.partial(contextvars.copy_context().run, plan)
    )
    if run.result is not None:
        runtime.kick()


def notify_due() -> None:
    runtime = _current()
    results = jobs.notify_all(runtime.sessions, runtime.settings, runtime.clock())
    if any(result.queued for result in results.values()):
        runtime.kick()


async def deliver_due() -> None:
    """Send everything due (new mails and retries) until a pass finds nothing more."""
    runtime = _current()
    deliverer = runtime.deliverer
    if deliverer is None:
        return
    if runtime.delivering.locked():
        runtime.again = True  # the running pass goes round once more
        return
    async with runtime.delivering:
        while not deliverer.stopping:
            runtime.again = False
            report = await deliverer.run(runtime.clock())
            if report.paused or (not report.counts and not runtime.again):
                break


def sync() -> None:
    sync_jobs(_current().scheduler, _current().sessions, _current().settings)


def heartbeat() -> None:
    pulse = _current().pulse
    if pulse is not None:
        pulse.beat(force=True)


def retention() -> None:
    from digest.retention import run_retention

    runtime = _current()
    run_retention(runtime.sessions, runtime.settings, runtime.clock())


# --- keeping the jobs in line with the schools --------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    added: list[str]
    moved: list[str]
    removed: list[str]


def sync_jobs(
    scheduler: BaseScheduler, sessions: sessionmaker[Session], settings: Settings
) -> SyncReport:
    """One weekly job per school; a changed weekday, time or zone moves it, nothing else does."""
    with sessions() as session:
        schools = list(session.scalars(select(School).order_by(School.id)))
    grace = int(settings.misfire_grace_hours * 3600)
    wanted = {edition_job_id(school.id): school for school in schools}
    added, moved, removed = [], [], []
    existing = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    for job_id, school in wanted.items():
        trigger = edition_trigger(school)
        job = existing.get(job_id)
        if job is None:
            scheduler.add_job(
                "scheduler.service:weekly_edition",
                trigger,
                args=[school.id],
                id=job_id,
                name=f"weekly edition of school {school.id}",
                jobstore="default",
                misfire_grace_time=grace,
                coalesce=True,
                max_instances=1,
                replace_existing=True,
            )
            added.append(school.id)
            continue
        if not _same_trigger(job.trigger, trigger):
            scheduler.reschedule_job(job_id, jobstore="default", trigger=trigger)
            moved.append(school.id)
            log.info("school %s: weekly job moved", school.id)
        if job.misfire_grace_time != grace:
            scheduler.modify_job(job_id, jobstore="default", misfire_grace_time=grace)
    for job_id in existing:
        if job_id.startswith(EDITION_PREFIX) and job_id not in wanted:
            scheduler.remove_job(job_id, jobstore="default")
            removed.append(job_id.removeprefix(EDITION_PREFIX))
    if added or moved or removed:
        log.info(
            "weekly jobs: %d added, %d moved, %d removed", len(added), len(moved), len(removed)
        )
    return SyncReport(added, moved, removed)


def _on_event(event: JobExecutionEvent) -> None:
    """A missed weekly run beyond the grace becomes an alert; a failed one, an alert and a retry."""
    if not event.job_id.startswith((EDITION_PREFIX, RETRY_PREFIX)):
        if event.code == EVENT_JOB_ERROR:
            log.error("job %s failed: %s", event.job_id, type(event.exception).__name__)
        return
    runtime = _current()
    school_id = event.job_id.split(":", 1)[1]
    now = runtime.clock()
    if event.code == EVENT_JOB_MISSED:
        cutoff = event.scheduled_run_time.astimezone(UTC)
        jobs.record_missed_run(runtime.sessions, school_id, cutoff, now)
    elif event.code == EVENT_JOB_ERROR:
        error = type(event.exception).__name__
        with runtime.sessions() as session, session.begin():
            jobs.raise_alert(
                session,
                AlertKind.RUN_FAILED,
                school_id,
                f"the weekly run failed ({error}); it is tried again every "
                f"{int(RUN_FAILED_RETRY.total_seconds() // 60)} minutes",
                now,
            )
        log.error("school %s: the weekly run failed (%s); retrying", school_id, error)
        runtime.scheduler.add_job(
            "scheduler.service:weekly_edition",
            "date",
            run_date=datetime.now(UTC) + RUN_FAILED_RETRY,
            args=[school_id],
            id=f"{RETRY_PREFIX}{school_id}",
            jobstore="local",
            misfire_grace_time=int(runtime.grace.total_seconds()),
            replace_existing=True,
        )


# --- building and running ------------------------------------------------------------------------


def job_table(engine: Engine) -> Table:
    """The job store's table (APScheduler's own), to create or read outside a scheduler."""
    table: Table = SQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE).jobs_t
    return table


def create_job_table(engine: Engine) -> None:
    """Create the job store's table if it is missing, before a scheduler starts.

    The job store creates it on start as well, but two schedulers starting at once on a new
    database both find it missing and the second CREATE fails (PostgreSQL: a unique violation in
    its catalogue). Whoever loses that race finds the table made and goes on."""
    try:
        job_table(engine).create(engine, checkfirst=True)
    except DBAPIError:
        if not inspect(engine).has_table(JOB_TABLE):
            raise
        log.info("the job store's table was created by another scheduler starting at once")


def build_scheduler(engine: Engine, settings: Settings) -> AsyncIOScheduler:
    return AsyncIOScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE),
            "local": MemoryJobStore(),
        },
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(settings.misfire_grace_hours * 3600),
        },
        timezone=UTC,
    )


def add_interval_jobs(scheduler: BaseScheduler, settings: Settings, *, worker: bool) -> None:
    """The process's own jobs: sync the weekly jobs, per-post mails, and sending."""
    now = datetime.now(UTC)
    scheduler.add_job(
        "scheduler.service:sync",
        "interval",
        seconds=SYNC_SECONDS,
        id="sync",
        name="match the weekly jobs to the schools",
        jobstore="local",
        misfire_grace_time=int(SYNC_SECONDS),
        replace_existing=True,
    )
    scheduler.add_job(
        "scheduler.service:notify_due",
        "interval",
        seconds=settings.notify_interval_seconds,
        id="notify",
        name="queue per-post mails",
        jobstore="local",
        next_run_time=now,
        misfire_grace_time=int(settings.notify_interval_seconds) + 1,
        replace_existing=True,
    )
    scheduler.add_job(
        "scheduler.service:heartbeat",
        "interval",
        seconds=HEARTBEAT_SECONDS,
        id="heartbeat",
        name="the scheduler's heartbeat",
        jobstore="local",
        next_run_time=now,
        misfire_grace_time=int(HEARTBEAT_SECONDS),
        replace_existing=True,
    )
    scheduler.add_job(
        "scheduler.service:retention",
        "cron",
        hour=3,
        minute=30,
        id="retention",
        name="purge what is older than the retention age",
        jobstore="local",
        replace_existing=True,
    )
    if worker:
        scheduler.add_job(
            "scheduler.service:deliver_due",
            "interval",
            seconds=settings.retry_interval_seconds,
            id="deliver",
            name="send what is due, retries included",
            jobstore="local",
            next_run_time=now,
            misfire_grace_time=int(settings.retry_interval_seconds) + 1,
            # A run that finds a pass busy returns at once (the pass goes round again), so
            # overlapping calls are expected and harmless.
            max_instances=3,
            replace_existing=True,
        )


async def serve(
    engine: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    worker: bool = True,
    deliverer: Deliverer | None = None,
    ready: Callable[[], None] | None = None,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (or ``stopping`` is set): the sends in flight finish, then
    the process exits cleanly."""
    from digest.worker import open_deliverer

    # The service logs what each run did; APScheduler's per-run lines would only repeat it.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)

    scheduler = build_scheduler(engine, settings)
    if worker and deliverer is None:
        deliverer = open_deliverer(sessions, settings)
    runtime = Runtime(sessions, settings, scheduler, deliverer if worker else None)
    runtime.pulse = Pulse(sessions, "scheduler")
    install(runtime)
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    scheduler.add_listener(_on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    create_job_table(engine)
    scheduler.start(paused=True)
    try:
        report = sync_jobs(scheduler, sessions, settings)
        add_interval_jobs(scheduler, settings, worker=worker)
        scheduler.resume()
        log.info(
            "scheduler started: %d school(s) (%d new, %d moved), %s",
            len(scheduler.get_jobs(jobstore="default")),
            len(report.added),
            len(report.moved),
            "with its own worker" if worker else "no worker (run `digest worker`)",
        )
        if ready is not None:
            ready()
        await stopping.wait()
        log.info("scheduler stopping: finishing the sends and the plans in flight")
        scheduler.pause()
        if runtime.deliverer is not None:
            runtime.deliverer.stop()
        # The weekly runs started or waiting for a thread are planned all the same: their
        # jobs' next run is next week's, so one dropped here would be a week without mail.
        await asyncio.get_running_loop().run_in_executor(None, runtime.planners.shutdown)
        if runtime.deliverer is not None:
            async with runtime.delivering:  # waits for the pass in flight to end
                pass
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        scheduler.shutdown(wait=False)
        if runtime.deliverer is not None:
            await runtime.deliverer.transport.close()
        runtime.pulse.stop()
        install(None)


# --- what ``digest scheduler --list`` prints ------------------------------------------------------


@dataclass(frozen=True)
class NextRun:
    school_id: str
    name: str
    at: datetime  # aware, in the school's zone
    zone: str
    locale: str
    overdue: bool
    holiday: str | None


def next_runs(
    engine: Engine, sessions: sessionmaker[Session], now: datetime | None = None
) -> list[NextRun]:
    """Each school's next weekly run: the stored job's time if the scheduler has one, else the
    trigger's next fire time from ``now``."""
    now = now or datetime.now(UTC)
    stored = _stored_runs(engine)
    with sessions() as session:
        schools = list(session.scalars(select(School).order_by(School.id)))
    runs = []
    for school in schools:
        zone = ZoneInfo(school.timezone)
        at = stored.get(edition_job_id(school.id))
        if at is None:
            at = edition_trigger(school).get_next_fire_time(None, now.astimezone(zone))
        assert at is not None
        local = at.astimezone(zone)
        runs.append(
            NextRun(
                school_id=school.id,
                name=school.name,
                at=local,
                zone=school.timezone,
                locale=school.locale,
                overdue=local < now,
                holiday=in_holiday(local, school),
            )
        )
    return runs


def _stored_runs(engine: Engine) -> dict[str, datetime]:
    """Job id -> next run, read from the job store's table (none before a scheduler ran)."""
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, JOB_TABLE):
            return {}
        table = job_table(engine)
        rows = connection.execute(select(table.c.id, table.c.next_run_time)).all()
    return {
        job_id: datetime.fromtimestamp(stamp, UTC) for job_id, stamp in rows if stamp is not None
    }


def format_run(run: NextRun) -> str:
    """``s1  OBS De Klimop  next: vrijdag 27-11-2026 16:00 Europe/Amsterdam``."""
    day = format_datetime(run.at, "EEEE dd-MM-yyyy HH:mm", locale=run.locale.replace("-", "_"))
    line = f"{run.school_id}  {run.name}  next: {day} {run.zone}"
    if run.overdue:
        line += " (overdue: runs when the scheduler starts, within the grace)"
    if run.holiday:
        line += f" (holiday {run.holiday}: no edition; its posts go with the next)"
    return line
