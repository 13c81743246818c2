"""Job functions: plain calls of the stages, so ``digest run``, the demo and the scheduler agree.

Each takes its instant explicitly, so the tests drive them with any clock; ``scheduler.service``
only decides *when* to call them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import SendReport
from digest.models import Alert, AlertKind, EditionStatus
from digest.notify import NotifyResult, plan_notifications, school_ids
from digest.periods import latest_cutoff
from digest.plan import PlanResult, load_school, plan_edition
from digest.settings import Settings
from digest.worker import open_deliverer

log = logging.getLogger(__name__)

# A scheduled run that starts more than this after its cutoff is recorded as late.
LATE_AFTER = timedelta(minutes=1)
WAITING_TO_SEND = (EditionStatus.PLANNED, EditionStatus.AWAITING_APPROVAL)


@dataclass(frozen=True)
class EditionRun:
    plan: PlanResult
    send: SendReport


def plan_latest(sessions: sessionmaker[Session], school_id: str, at: datetime) -> PlanResult:
    """Plan the school's edition whose cutoff is the latest at or before ``at`` (again: no-op)."""
    with sessions() as session, session.begin():
        school = load_school(session, school_id)
        cutoff = latest_cutoff(
            at, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
        )
        return plan_edition(session, school.id, cutoff)


async def send_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    at: datetime,
    *,
    school_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Deliver what is due at ``at`` through the configured transport."""
    deliverer = open_deliverer(sessions, settings)
    try:
        return await deliverer.run(at, school_id=school_id, progress=progress)
    finally:
        await deliverer.transport.close()


async def run_edition(
    sessions: sessionmaker[Session],
    settings: Settings,
    school_id: str,
    at: datetime,
    *,
    progress: Callable[[int], None] | None = None,
) -> EditionRun:
    """Plan, then send: the weekly job of one school. Running it twice sends nothing twice."""
    planned = plan_latest(sessions, school_id, at)
    # Sending happens no earlier than the cutoff, even when replaying a week with --at.
    sent = await send_due(
        sessions,
        settings,
        max(at, planned.edition.cutoff),
        school_id=school_id,
        progress=progress,
    )
    return EditionRun(plan=planned, send=sent)


@dataclass(frozen=True)
class ScheduledRun:
    """What one scheduled run of a school did: its edition, or why it planned none."""

    school_id: str
    cutoff: datetime
    result: PlanResult | None  # None: beyond the grace, an alert instead
    late: timedelta


def _plan_once(
    sessions: sessionmaker[Session],
    school_id: str,
    cutoff: datetime,
    late: int | None,
    *,
    hold: bool = False,
) -> PlanResult:
    """Plan, tolerating a second scheduler that planned the same edition at the same moment.

    On PostgreSQL the school row's lock serialises the two; on SQLite the loser of the race meets
    the edition's unique key or a busy snapshot, and the next attempt finds the edition planned.
    ``hold`` plans a new edition held, in the same transaction, so no worker sends it.
    """
    for attempt in range(5):
        try:
            with sessions() as session, session.begin():
                result = plan_edition(session, school_id, cutoff, late_seconds=late)
                if hold and result.created and result.edition.status in WAITING_TO_SEND:
                    result.edition.status = EditionStatus.HELD
                return result
        except (IntegrityError, OperationalError):
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def run_scheduled_edition(
    sessions: sessionmaker[Session], school_id: str, now: datetime, *, grace: timedelta
) -> ScheduledRun:
    """The weekly job of one school, run at ``now`` (its fire time, or later within the grace).

    The edition is the one whose cutoff is the latest at or before ``now``; its period comes from
    the cutoffs, never from the clock. Run again (or by a second scheduler), it plans nothing new.
    Beyond the grace the edition is planned *held* and the administrators get an alert.
    """
    with sessions() as session:
        school = load_school(session, school_id)
        cutoff = latest_cutoff(
            now, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
        )
    late = now - cutoff
    if late > grace:
        return ScheduledRun(
            school_id, cutoff, record_missed_run(sessions, school_id, cutoff, now), late
        )
    late_seconds = int(late.total_seconds()) if late > LATE_AFTER else None
    result = _plan_once(sessions, school_id, cutoff, late_seconds)
    if result.created and late_seconds is not None:
        log.warning(
            "edition %s of school %s ran %d min after its cutoff (the service was down)",
            result.edition.id,
            school_id,
            late_seconds // 60,
        )
    elif result.created:
        log.info("edition %s of school %s planned", result.edition.id, school_id)
    resolve_alerts(sessions, school_id, AlertKind.RUN_FAILED, now)
    return ScheduledRun(school_id, cutoff, result, late)


def record_missed_run(
    sessions: sessionmaker[Session], school_id: str, cutoff: datetime, now: datetime
) -> PlanResult:
    """A weekly run came too late to go out by itself: plan its edition held, and alert.

    Nothing is lost and nothing goes out days late unasked: an administrator approves the held
    edition (it is sent at once) or cancels it (its posts roll into the next edition).
    """
    late = int((now - cutoff).total_seconds())
    result = _plan_once(sessions, school_id, cutoff, late, hold=True)
    if result.created and result.edition.status is EditionStatus.HELD:
        with sessions() as session, session.begin():
            message = (
                f"the edition due {cutoff:%Y-%m-%d %H:%M} UTC (#{result.edition.id}) did not go "
                f"out: the service was down until {now:%Y-%m-%d %H:%M} UTC, beyond the grace. "
                "It is held: approve it to send it now, or cancel it and its posts go with the "
                f"next edition (`digest edition approve|cancel {result.edition.id}`)"
            )
            raise_alert(session, AlertKind.MISSED_RUN, school_id, message, now)
        log.error(
            "school %s: the run of edition %s came beyond the grace; it is held",
            school_id,
            result.edition.id,
        )
    return result


def raise_alert(
    session: Session, kind: AlertKind, school_id: str | None, message: str, now: datetime
) -> Alert:
    """Open an alert, or count one more on the open alert of the same kind and school."""
    alert = session.scalars(
        select(Alert).where(
            Alert.kind == kind, Alert.school_id == school_id, Alert.resolved_at.is_(None)
        )
    ).first()
    if alert is None:
        alert = Alert(kind=kind, school_id=school_id, message=message, created_at=now)
        session.add(alert)
    else:
        alert.count += 1
        alert.message = message
    alert.updated_at = now
    return alert


def resolve_alerts(
    sessions: sessionmaker[Session], school_id: str, kind: AlertKind, now: datetime
) -> None:
    with sessions() as session, session.begin():
        for alert in session.scalars(
            select(Alert).where(
                Alert.kind == kind, Alert.school_id == school_id, Alert.resolved_at.is_(None)
            )
        ):
            alert.resolved_at = now
            alert.updated_at = now


def notify_all(
    sessions: sessionmaker[Session], settings: Settings, now: datetime
) -> dict[str, NotifyResult]:
    """Queue the per-post mails of every school that are due at ``now``."""
    settle = timedelta(minutes=settings.notify_settle_minutes)
    with sessions() as session:
        schools = school_ids(session)
    results = {}
    for school_id in schools:
        with sessions() as session, session.begin():
            results[school_id] = plan_notifications(session, school_id, now, settle=settle)
    return results
