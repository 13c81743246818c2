"""The scheduler: every school's edition at its own cutoff, on time, once, across restarts and DST.

The trigger and the job function are tested with explicit times; the restart tests run the real
APScheduler with its SQLAlchemy job store under a travelling clock (time-machine: the clock is the
edge of the world here); one test runs a real ``digest scheduler`` process on PostgreSQL with a
real SMTP server.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from click.testing import CliRunner
from conftest import child, cli_environment, document, group, guardian, on_event_loop, post, school
from smtp_server import SmtpServer
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from digest.cli import main
from digest.deliver import Deliverer
from digest.editions import Decision, DecisionRefused, decide
from digest.ingest import import_document
from digest.models import (
    Alert,
    AlertKind,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionPost,
    EditionStatus,
    School,
)
from digest.periods import next_cutoff, parse_instant
from digest.render import Renderer
from digest.settings import Settings, load_settings
from digest.transports import open_transport
from scheduler import jobs
from scheduler.service import (
    JOB_TABLE,
    build_scheduler,
    create_job_table,
    edition_job_id,
    edition_trigger,
    job_table,
    next_runs,
    serve,
    sync_jobs,
)

AMS = ZoneInfo("Europe/Amsterdam")
SENDER = "nieuwsbrief@digest.example"
GRACE = timedelta(hours=6)
CUTOFF = parse_instant("2026-11-27T16:00", "Europe/Amsterdam")  # Friday, 15:00 UTC


def weekly_school(*, posts: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """Three newsletter guardians, one app user, a week of posts before the 27 November cutoff."""
    return document(
        schools=[school(name="OBS De Klimop", **fields)],
        groups=[group("gs", kind="school", name="De Klimop"), group("g5", name="Groep 5")],
        children=[child("c1", ["g5"]), child("c2", ["g5"]), child("c3", ["g5"])],
        guardians=[
            guardian("p1", ["c1"], delivery="newsletter"),
            guardian("p2", ["c2"], delivery="newsletter"),
            guardian("p3", ["c3"], delivery="newsletter"),
            guardian("p4", ["c3"], delivery="app"),
        ],
        posts=posts
        if posts is not None
        else [
            post("m1", "g5", "2026-11-24T10:15:00+01:00", title="Excursie naar het bos"),
            post("m2", "gs", "2026-11-26T12:00:00+01:00", title="Sinterklaas op school"),
        ],
    )


def load(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)


def editions(sessions: sessionmaker[Session]) -> list[Edition]:
    with sessions() as session:
        return list(session.scalars(select(Edition).order_by(Edition.cutoff)))


def posts_of(sessions: sessionmaker[Session], edition_id: int) -> set[str]:
    with sessions() as session:
        return set(
            session.scalars(select(EditionPost.post_id).where(EditionPost.edition_id == edition_id))
        )


def open_alerts(sessions: sessionmaker[Session], kind: AlertKind) -> list[Alert]:
    with sessions() as session:
        return list(
            session.scalars(select(Alert).where(Alert.kind == kind, Alert.resolved_at.is_(None)))
        )


def received(server: SmtpServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


@functools.cache
def renderer() -> Renderer:
    return Renderer(load_settings(mail_url="null://", mail_from=SENDER))


def settings_for(server: SmtpServer, **extra: Any) -> Settings:
    return load_settings(mail_url=server.url(), mail_from=SENDER, **extra)


# --- the trigger: every Friday of 2025-2030 at 16:00 local, across both DST changes ---------


def test_the_next_run_is_friday_1600_local_for_every_week_of_2025_to_2030() -> None:
    trigger = edition_trigger(
        School(id="s1", digest_weekday=4, digest_time="16:00", timezone="Europe/Amsterdam")
    )
    fridays = []
    day = date(2025, 1, 3)
    while day.year <= 2030:
        fridays.append(day)
        day += timedelta(days=7)
    previous = None
    now = datetime(2024, 12, 31, 12, 0, tzinfo=UTC)
    utc_hours = Counter()
    for friday in fridays:
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        local = fire.astimezone(AMS)
        assert (local.date(), local.hour, local.minute) == (friday, 16, 0)
        # The same instant as the cutoff arithmetic the plan uses.
        assert fire == next_cutoff(now, weekday=4, clock="16:00", zone="Europe/Amsterdam")
        utc_hours[fire.astimezone(UTC).hour] += 1
        previous, now = fire, fire
    assert len(fridays) == 313
    # Summer time (16:00 = 14:00 UTC) and winter time (15:00 UTC) both occur, nothing else.
    assert set(utc_hours) == {14, 15}
    # The weeks around each change: the last Friday before and the first after.
    last_winter = trigger.get_next_fire_time(None, datetime(2026, 3, 25, tzinfo=UTC))
    first_summer = trigger.get_next_fire_time(None, datetime(2026, 3, 28, tzinfo=UTC))
    assert (last_winter.astimezone(UTC).hour, first_summer.astimezone(UTC).hour) == (15, 14)
    last_summer = trigger.get_next_fire_time(None, datetime(2026, 10, 21, tzinfo=UTC))
    first_winter = trigger.get_next_fire_time(None, datetime(2026, 10, 24, tzinfo=UTC))
    assert (last_summer.astimezone(UTC).hour, first_winter.astimezone(UTC).hour) == (14, 15)


def test_a_school_in_another_zone_runs_at_its_own_local_time() -> None:
    trigger = edition_trigger(
        School(id="s2", digest_weekday=3, digest_time="15:30", timezone="America/Curacao")
    )
    fire = trigger.get_next_fire_time(None, datetime(2026, 11, 22, tzinfo=UTC))
    assert fire is not None
    local = fire.astimezone(ZoneInfo("America/Curacao"))
    assert (local.date(), local.strftime("%A %H:%M")) == (date(2026, 11, 26), "Thursday 15:30")


# --- the job function, with explicit times ------------------------------------------------------


def test_the_job_plans_the_edition_of_the_latest_cutoff_and_is_a_no_op_again(sessions) -> None:
    load(sessions, weekly_school())
    first = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(seconds=2), grace=GRACE)
    assert first.result is not None and first.result.created
    assert first.cutoff == CUTOFF and first.result.edition.late_seconds is None
    assert first.result.edition.period_start == CUTOFF - timedelta(days=7)
    again = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(minutes=30), grace=GRACE)
    assert again.result is not None and not again.result.created
    assert [e.cutoff for e in editions(sessions)] == [CUTOFF]


def test_a_run_two_hours_late_plans_that_weeks_edition_and_records_the_delay(sessions) -> None:
    load(sessions, weekly_school())
    run = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(hours=2), grace=GRACE)
    assert run.result is not None and run.result.created
    (edition,) = editions(sessions)
    assert (edition.cutoff, edition.late_seconds) == (CUTOFF, 7200)
    assert posts_of(sessions, edition.id) == {"m1", "m2"}


def test_beyond_the_grace_the_edition_is_held_with_an_alert_and_cancel_rolls_its_posts(
    sessions,
) -> None:
    load(sessions, weekly_school())
    run = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(hours=7), grace=GRACE)
    assert run.result is not None
    (edition,) = editions(sessions)
    assert (edition.cutoff, edition.status) == (CUTOFF, EditionStatus.HELD)
    (alert,) = open_alerts(sessions, AlertKind.MISSED_RUN)
    assert alert.school_id == "s1" and "2026-11-27 15:00 UTC" in alert.message
    assert f"#{edition.id}" in alert.message and "held" in alert.message
    # The administrators decide: cancelled, its posts go with the next edition.
    with sessions() as session, session.begin():
        decide(session, edition.id, Decision.CANCEL, at=CUTOFF + timedelta(hours=8))
    later = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(days=7), grace=GRACE)
    assert later.result is not None and later.result.created
    assert posts_of(sessions, later.result.edition.id) == {"m1", "m2"}


def test_a_held_missed_edition_goes_out_once_approved(sessions, smtp_server: SmtpServer) -> None:
    load(sessions, weekly_school())
    settings = settings_for(smtp_server)
    late = CUTOFF + timedelta(days=1)
    run = jobs.run_scheduled_edition(sessions, "s1", late, grace=GRACE)
    on_event_loop(jobs.send_due(sessions, settings, late))
    assert smtp_server.messages == []
    assert run.result is not None
    with sessions() as session, session.begin():
        decide(session, run.result.edition.id, Decision.APPROVE, at=late)
    on_event_loop(jobs.send_due(sessions, settings, late))
    assert received(smtp_server) == Counter({f"p{n}@ouders.example": 1 for n in (1, 2, 3)})


def test_two_schedulers_firing_together_produce_one_edition(sessions) -> None:
    load(sessions, weekly_school())
    barrier = threading.Barrier(4)
    results: list[jobs.ScheduledRun] = []
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            barrier.wait()
            results.append(
                jobs.run_scheduled_edition(
                    sessions, "s1", CUTOFF + timedelta(seconds=1), grace=GRACE
                )
            )
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(1 for r in results if r.result is not None and r.result.created) == 1
    assert len({r.result.edition.id for r in results if r.result is not None}) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 3


def test_a_holiday_week_sends_nothing_and_the_next_edition_carries_its_posts(
    sessions, smtp_server: SmtpServer
) -> None:
    doc = weekly_school(
        holidays=[{"start": "2026-12-19", "end": "2027-01-04", "name": "Kerstvakantie"}],
        posts=[
            post("m1", "g5", "2026-12-14T10:00:00+01:00", title="Kerstmarkt"),
            post("m2", "g5", "2026-12-21T10:00:00+01:00", title="Fijne vakantie"),
            post("m3", "g5", "2026-12-29T10:00:00+01:00", title="Nieuwjaarswens"),
            post("m4", "gs", "2027-01-06T10:00:00+01:00", title="Weer naar school"),
        ],
    )
    load(sessions, doc)
    settings = settings_for(smtp_server)
    fridays = [
        parse_instant(f"{d}T16:00", "Europe/Amsterdam")
        for d in ("2026-12-18", "2026-12-25", "2027-01-01", "2027-01-08")
    ]
    for friday in fridays:
        run = jobs.run_scheduled_edition(sessions, "s1", friday, grace=GRACE)
        on_event_loop(jobs.send_due(sessions, settings, friday))
        assert run.result is not None
    statuses = [(e.cutoff, e.status) for e in editions(sessions)]
    assert statuses == [
        (fridays[0], EditionStatus.DONE),
        (fridays[1], EditionStatus.SKIPPED_HOLIDAY),
        (fridays[2], EditionStatus.SKIPPED_HOLIDAY),
        (fridays[3], EditionStatus.DONE),
    ]
    # Each parent got two mails: before the holiday and the first one after it.
    assert received(smtp_server) == Counter({f"p{n}@ouders.example": 2 for n in (1, 2, 3)})
    after = editions(sessions)[3]
    assert posts_of(sessions, after.id) == {"m2", "m3", "m4"}
    last = smtp_server.messages[-1].content.decode()
    assert "Fijne vakantie" in last and "Nieuwjaarswens" in last and "Kerstmarkt" not in last


def test_a_cancelled_editions_posts_roll_into_the_next(sessions) -> None:
    load(sessions, weekly_school(requires_approval=True))
    run = jobs.run_scheduled_edition(sessions, "s1", CUTOFF, grace=GRACE)
    assert run.result is not None
    assert run.result.edition.status is EditionStatus.AWAITING_APPROVAL
    with sessions() as session, session.begin():
        decide(session, run.result.edition.id, Decision.CANCEL, at=CUTOFF)
    with sessions() as session, session.begin(), pytest.raises(DecisionRefused, match="cancelled"):
        decide(session, run.result.edition.id, Decision.APPROVE, at=CUTOFF)
    later = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(days=7), grace=GRACE)
    assert later.result is not None
    # Its own week, plus the posts the cancelled edition gave back.
    assert later.result.edition.period_start == CUTOFF
    assert posts_of(sessions, later.result.edition.id) == {"m1", "m2"}


def test_an_edition_awaiting_approval_is_not_sent_until_approved(
    sessions, smtp_server: SmtpServer
) -> None:
    load(sessions, weekly_school(requires_approval=True))
    settings = settings_for(smtp_server)
    run = jobs.run_scheduled_edition(sessions, "s1", CUTOFF, grace=GRACE)
    on_event_loop(jobs.send_due(sessions, settings, CUTOFF + timedelta(hours=1)))
    assert smtp_server.messages == []
    assert run.result is not None
    with sessions() as session, session.begin():
        decide(session, run.result.edition.id, Decision.APPROVE, at=CUTOFF)
    on_event_loop(jobs.send_due(sessions, settings, CUTOFF + timedelta(hours=1)))
    assert received(smtp_server) == Counter({f"p{n}@ouders.example": 1 for n in (1, 2, 3)})


# --- the real APScheduler with its job store, under a travelling clock --------------------------


def run_scheduler_until(
    engine: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
    done: Callable[[], bool],
    *,
    worker: bool = True,
    timeout: float = 30.0,
) -> None:
    """Start the scheduler as ``digest scheduler`` does, wait until ``done()``, stop it."""

    async def main_() -> None:
        stopping = asyncio.Event()
        deliverer = None
        if worker:
            deliverer = Deliverer(sessions, open_transport(settings.mail_url), settings, renderer())
        task = asyncio.create_task(
            serve(engine, sessions, settings, worker=worker, deliverer=deliverer, stopping=stopping)
        )
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.2)
        while not await asyncio.to_thread(done):
            if time.monotonic() > deadline or task.done():
                stopping.set()
                await task
                raise AssertionError("the scheduler did not get there in time")
            await asyncio.sleep(0.1)
        stopping.set()
        await task

    on_event_loop(main_())


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=AMS)


def test_a_restart_two_hours_after_the_cutoff_sends_that_weeks_edition_exactly_once(
    engine, sessions, smtp_server: SmtpServer
) -> None:
    load(sessions, weekly_school())
    settings = settings_for(smtp_server, misfire_grace_hours=6)
    # Thursday: the scheduler runs, stores next Friday 16:00, and stops (the service goes down).
    with time_machine.travel(local("2026-11-26T12:00"), tick=True):
        run_scheduler_until(engine, sessions, settings, lambda: True, worker=False)
    assert editions(sessions) == []
    # Friday 18:00: it comes back; the missed run fires once and the mail goes out.
    with time_machine.travel(local("2026-11-27T18:00"), tick=True):
        run_scheduler_until(engine, sessions, settings, lambda: len(smtp_server.messages) >= 3)
    (edition,) = editions(sessions)
    assert edition.cutoff == CUTOFF and 7200 <= edition.late_seconds < 7260
    # Another restart the same evening sends nothing more.
    with time_machine.travel(local("2026-11-27T18:30"), tick=True):
        run_scheduler_until(engine, sessions, settings, lambda: True)
        time.sleep(0.5)
    assert received(smtp_server) == Counter({f"p{n}@ouders.example": 1 for n in (1, 2, 3)})
    assert len(editions(sessions)) == 1
    with sessions() as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}
    # The stored job now waits for the next Friday.
    (run,) = next_runs(engine, sessions, now=local("2026-11-27T18:31"))
    assert run.at == local("2026-12-04T16:00")


def test_a_restart_beyond_the_grace_sends_nothing_and_alerts_the_administrators(
    engine, sessions, smtp_server: SmtpServer
) -> None:
    load(sessions, weekly_school())
    settings = settings_for(smtp_server, misfire_grace_hours=6)
    with time_machine.travel(local("2026-11-26T12:00"), tick=True):
        run_scheduler_until(engine, sessions, settings, lambda: True, worker=False)
    with time_machine.travel(local("2026-11-28T09:00"), tick=True):
        run_scheduler_until(
            engine, sessions, settings, lambda: bool(open_alerts(sessions, AlertKind.MISSED_RUN))
        )
        time.sleep(0.5)  # the worker had its chance to send
    assert [e.status for e in editions(sessions)] == [EditionStatus.HELD]
    assert smtp_server.messages == []
    result = CliRunner().invoke(main, ["alerts"], env={"DIGEST_DATABASE_URL": str_url(engine)})
    assert result.exit_code == 0, result.output
    assert "missed_run school s1" in result.output and "approve it to send it now" in result.output


def board(due: list[str], early: str) -> dict[str, Any]:
    """Schools ``due`` (weekly run Friday 16:00) and ``early`` (Wednesday 16:00), one newsletter
    parent each per class, a post in each class this week."""
    arrays: dict[str, list[dict[str, Any]]] = {
        "schools": [],
        "groups": [],
        "children": [],
        "guardians": [],
        "posts": [],
    }
    for school_id in [*due, early]:
        weekday = "wednesday" if school_id == early else "friday"
        arrays["schools"].append(school(school_id, digest_weekday=weekday))
        arrays["groups"].append(group(f"{school_id}-g5", school_id))
        for n in range(3):
            kid, parent = f"{school_id}-c{n}", f"{school_id}-p{n}"
            arrays["children"].append(child(kid, [f"{school_id}-g5"], school_id))
            arrays["guardians"].append(guardian(parent, [kid], school_id))
        arrays["posts"].append(
            post(f"{school_id}-m1", f"{school_id}-g5", "2026-11-23T10:00:00+01:00")
        )
    return document(**arrays)


@pytest.mark.parametrize(
    "engine", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_while_a_fridays_plans_wait_the_embedded_worker_sends_and_stopping_plans_them_all(
    engine, sessions, smtp_server: SmtpServer
) -> None:
    # Eight schools' weekly runs fire at once, and each plan waits: their school rows are
    # locked (a slow plan, a busy database). More waiting plans than the event loop's default
    # executor has threads (six here): that was where the runs went, and the embedded
    # worker's group commits behind them, so no mail was recorded until every plan was done.
    # Now the runs have threads of their own: Wednesday's edition, queued, is sent and
    # recorded meanwhile. And a stop plans every run that fired before the process ends: a
    # fired job's next run is next week's, so a plan dropped there is a week without mail.
    due = [f"s{n}" for n in range(8)]
    load(sessions, board(due, "w1"))
    wednesday = parse_instant("2026-11-25T16:00", "Europe/Amsterdam")
    jobs.run_scheduled_edition(sessions, "w1", wednesday, grace=GRACE)
    settings = settings_for(smtp_server, misfire_grace_hours=6)
    with time_machine.travel(local("2026-11-26T12:00"), tick=True):
        run_scheduler_until(engine, sessions, settings, lambda: True, worker=False)

    locker = engine.connect()
    hold = locker.begin()
    locker.execute(select(School.id).where(School.id.in_(due)).with_for_update())
    released: list[str] = []
    releasing = threading.Lock()

    def release(by: str) -> None:
        with releasing:
            if not released:
                released.append(by)
                hold.commit()

    timer = threading.Timer(20, release, args=["the timer"])  # so that a failure cannot hang
    timer.start()

    def wednesday_sent() -> bool:
        with sessions() as session:
            rows = session.scalars(select(Delivery.status).where(Delivery.school_id == "w1")).all()
        if len(rows) == 3 and set(rows) == {DeliveryStatus.SENT}:
            release("the test")
            return True
        return False

    try:
        with time_machine.travel(local("2026-11-27T16:00:30"), tick=True):
            run_scheduler_until(engine, sessions, settings, wednesday_sent)
    finally:
        timer.cancel()
        release("the end")
        locker.close()
    assert released == ["the test"], "Wednesday's mails waited for the Friday plans"
    assert received(smtp_server) >= Counter({f"w1-p{n}@ouders.example": 1 for n in range(3)})
    assert max(received(smtp_server).values()) == 1
    planned = {e.school_id for e in editions(sessions) if e.cutoff == CUTOFF}
    assert planned == set(due)


def str_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_changing_a_schools_weekday_through_an_import_moves_its_job(engine, sessions) -> None:
    load(sessions, weekly_school())
    settings = load_settings(mail_url="null://")

    async def scenario() -> list[datetime | None]:
        scheduler = build_scheduler(engine, settings)
        scheduler.start(paused=True)
        try:
            seen = []
            first = sync_jobs(scheduler, sessions, settings)
            assert first.added == ["s1"]
            seen.append(scheduler.get_job(edition_job_id("s1")).next_run_time)
            # A restart with unchanged settings keeps the stored time (a missed run stays due).
            again = sync_jobs(scheduler, sessions, settings)
            assert (again.added, again.moved) == ([], [])
            seen.append(scheduler.get_job(edition_job_id("s1")).next_run_time)
            load(sessions, weekly_school(digest_weekday="wednesday", digest_time="15:00"))
            moved = sync_jobs(scheduler, sessions, settings)
            assert moved.moved == ["s1"]
            seen.append(scheduler.get_job(edition_job_id("s1")).next_run_time)
            return seen
        finally:
            scheduler.shutdown(wait=False)

    with time_machine.travel(local("2026-11-22T10:00"), tick=False):
        friday, kept, wednesday = on_event_loop(scenario())
    assert friday == kept == local("2026-11-27T16:00")
    assert wednesday == local("2026-11-25T15:00")


def test_digest_scheduler_list_prints_each_schools_next_run_in_its_own_zone(
    sessions, db_url: str
) -> None:
    load(sessions, weekly_school())
    with sessions() as session, session.begin():
        import_document(
            session,
            document(
                schools=[
                    school(
                        "s2",
                        name="Basisschool Sint Jozef",
                        locale="en",
                        timezone="Europe/London",
                        digest_weekday="thursday",
                        digest_time="15:00",
                        holidays=[
                            {"start": "2026-11-23", "end": "2026-11-27", "name": "Half term"}
                        ],
                    )
                ]
            ),
        )
    with time_machine.travel(local("2026-11-22T10:00"), tick=False):
        result = CliRunner().invoke(
            main, ["scheduler", "--list"], env={"DIGEST_DATABASE_URL": db_url}
        )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "s1  OBS De Klimop  next: vrijdag 27-11-2026 16:00 Europe/Amsterdam",
        "s2  Basisschool Sint Jozef  next: Thursday 26-11-2026 15:00 Europe/London"
        " (holiday Half term: no edition; its posts go with the next)",
    ]


# --- a real ``digest scheduler`` process on PostgreSQL ------------------------------------------


@pytest.mark.postgres
def test_two_real_scheduler_processes_send_the_edition_at_the_next_minute_once(
    pg_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    from digest.db import make_engine, session_factory, upgrade

    # A database of its own: the processes' job store must not meet other tests' rows.
    name = f"digest_sched_{os.getpid()}_{int(time.time())}"
    admin = make_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    processes: list[subprocess.Popen[str]] = []
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        now = datetime.now(AMS)
        cutoff = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
        if (cutoff - now).total_seconds() < 15:
            cutoff += timedelta(minutes=1)
        published = (now - timedelta(hours=1)).isoformat()
        load(
            sessions,
            weekly_school(
                digest_weekday=cutoff.strftime("%A").lower(),
                digest_time=cutoff.strftime("%H:%M"),
                posts=[post("m1", "g5", published, title="Excursie naar het bos")],
            ),
        )
        env = cli_environment(
            DIGEST_DATABASE_URL=url,
            DIGEST_MAIL_URL=smtp_server.url(),
            DIGEST_MAIL_FROM=SENDER,
            DIGEST_NOTIFY_INTERVAL_SECONDS="5",
        )
        # Two schedulers started by mistake on one database: still one edition, one mail each.
        both = [
            subprocess.Popen(
                [sys.executable, "-m", "digest", "-v", "scheduler"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        processes.extend(both)
        deadline = time.monotonic() + (cutoff - now).total_seconds() + 60
        while len(smtp_server.messages) < 3:
            for process in both:
                assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no mail arrived a minute after the cutoff"
            time.sleep(0.2)
        arrived = datetime.now(AMS)
        assert arrived >= cutoff
        alive = subprocess.run(
            [sys.executable, "-m", "digest", "healthcheck", "--role", "scheduler"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert alive.returncode == 0, alive.stderr
        assert "scheduler on" in alive.stdout and "heartbeat" in alive.stdout
        time.sleep(2)  # the other scheduler's run, had it planned a second edition, would show
        for process in both:
            process.send_signal(signal.SIGTERM)
        for process in both:
            out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
            assert "scheduler stopped" in out
        assert received(smtp_server) == Counter({f"p{n}@ouders.example": 1 for n in (1, 2, 3)})
        assert "Excursie naar het bos" in smtp_server.messages[0].content.decode()
        with sessions() as session:
            edition = session.scalars(select(Edition)).one()
            assert edition.cutoff == cutoff.astimezone(UTC)
            assert edition.status is EditionStatus.DONE
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_digest_edition_decides_and_status_shows_a_late_run(sessions, db_url: str) -> None:
    load(sessions, weekly_school())
    run = jobs.run_scheduled_edition(sessions, "s1", CUTOFF + timedelta(hours=7), grace=GRACE)
    assert run.result is not None
    number = run.result.edition.id
    env = {"DIGEST_DATABASE_URL": db_url}
    runner = CliRunner()
    shown = runner.invoke(main, ["status", "--school", "s1", "--at", "2026-11-27T23:00"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"edition {number} (held, ran 420 min after its cutoff)" in shown.output
    approved = runner.invoke(main, ["edition", "approve", str(number)], env=env)
    assert (approved.exit_code, approved.output) == (0, f"edition {number}: planned\n")
    again = runner.invoke(main, ["edition", "approve", str(number)], env=env)
    assert again.exit_code == 1
    assert f"error: edition {number} is planned: it cannot be approved" in again.output
    missing = runner.invoke(main, ["edition", "cancel", "999"], env=env)
    assert missing.exit_code == 1 and "there is no edition 999" in missing.output


def test_sigterm_lets_the_sends_in_flight_finish_and_leaves_the_rest_queued(
    engine, sessions, db_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    guardians = [guardian(f"p{n}", ["c1"], delivery="newsletter") for n in range(1, 9)]
    doc = weekly_school()
    doc["guardians"] = guardians
    load(sessions, doc)
    with sessions() as session, session.begin():
        from digest.plan import plan_edition

        plan_edition(session, "s1", CUTOFF)
    smtp_server.delays = {"DATA": 1.0}  # each message takes a second: some are in flight
    env = cli_environment(
        DIGEST_DATABASE_URL=db_url,
        DIGEST_MAIL_URL=smtp_server.url(),
        DIGEST_MAIL_FROM=SENDER,
        DIGEST_SEND_CONCURRENCY="2",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "scheduler"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not smtp_server.messages:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "nothing was sent"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        # A clean exit takes the scheduler's heartbeat away: the container's check says so.
        gone = subprocess.run(
            [sys.executable, "-m", "digest", "healthcheck", "--role", "scheduler"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gone.returncode == 1 and "no scheduler heartbeat" in gone.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "scheduler stopped" in out
    with sessions() as session:
        rows = Counter(session.scalars(select(Delivery.status)))
    # Every row is final or back in the queue; what the server accepted is recorded as sent.
    assert set(rows) <= {DeliveryStatus.SENT, DeliveryStatus.QUEUED}
    assert rows[DeliveryStatus.SENT] == len(smtp_server.messages) < 8
    # A worker sends the rest: each parent once.
    rest = subprocess.run(
        [sys.executable, "-m", "digest", "worker", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rest.returncode == 0, rest.stderr
    assert received(smtp_server) == Counter({f"p{n}@ouders.example": 1 for n in range(1, 9)})


def test_the_scheduler_purges_with_the_retention_job(engine, sessions) -> None:
    """The daily job is the retention module's purge; a year later the old rows are gone."""
    from scheduler import service

    load(sessions, weekly_school())
    settings = load_settings(mail_url="null://", retention_days=365)
    jobs.run_scheduled_edition(sessions, "s1", CUTOFF, grace=GRACE)
    on_event_loop(jobs.send_due(sessions, settings, CUTOFF))
    with sessions() as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}
    # The rows are stamped on the real clock: 400 days after both the week and today.
    with time_machine.travel(max(datetime.now(UTC), CUTOFF) + timedelta(days=400), tick=False):
        service.install(service.Runtime(sessions, settings, build_scheduler(engine, settings)))
        try:
            service.retention()
        finally:
            service.install(None)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalar(select(func.count()).select_from(EditionPost)) == 2


@pytest.mark.postgres
def test_a_scheduler_starting_while_another_creates_the_job_table_goes_on(pg_url: str) -> None:
    """Two schedulers started at once on a new database: the second CREATE of the job store's
    table waits for the first and then fails in PostgreSQL's catalogue; that must not stop it."""
    from digest.db import make_engine

    engine = make_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {JOB_TABLE}"))
    first = engine.connect()
    creating = first.begin()
    job_table(engine).create(first)
    failures: list[BaseException] = []

    def second_scheduler() -> None:
        try:
            create_job_table(engine)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=second_scheduler)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                        " AND query LIKE '%CREATE TABLE%'"
                    )
                ).scalar_one()
            time.sleep(0.05)
        assert waiting == 1, "the second CREATE did not wait for the first"
    finally:
        creating.commit()
        first.close()
        thread.join(10)
    assert failures == []

    async def start_on_it() -> list[Any]:
        scheduler = build_scheduler(engine, load_settings())
        scheduler.start(paused=True)
        try:
            return scheduler.get_jobs(jobstore="default")
        finally:
            scheduler.shutdown(wait=False)

    try:
        assert on_event_loop(start_on_it()) == []
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {JOB_TABLE}"))
        engine.dispose()
