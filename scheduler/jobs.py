"""Job functions: plain calls of the stages, so ``digest run``, the demo and a scheduler agree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import SendReport
from digest.periods import latest_cutoff
from digest.plan import PlanResult, load_school, plan_edition
from digest.settings import Settings
from digest.worker import open_deliverer


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
