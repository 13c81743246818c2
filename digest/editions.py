"""What an administrator decides about an edition: approve, hold, cancel, or an extra run now.

The worker sends only rows of ``planned`` or ``sending`` editions, so each decision is a status
change that every process honours from its next claim. A cancelled edition gives its posts
back: they roll into the next edition, so nothing is lost.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from digest.errors import DigestError
from digest.models import (
    AuditEvent,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionPost,
    EditionStatus,
    Recipient,
)
from digest.plan import PlanResult, plan_edition

log = logging.getLogger(__name__)


class Decision(enum.StrEnum):
    APPROVE = "approve"
    HOLD = "hold"
    CANCEL = "cancel"


# From which statuses each decision may be taken, and the status it leads to.
ALLOWED: dict[Decision, tuple[frozenset[EditionStatus], EditionStatus]] = {
    Decision.APPROVE: (
        frozenset({EditionStatus.AWAITING_APPROVAL, EditionStatus.HELD}),
        EditionStatus.PLANNED,
    ),
    Decision.HOLD: (
        frozenset({EditionStatus.PLANNED, EditionStatus.AWAITING_APPROVAL, EditionStatus.SENDING}),
        EditionStatus.HELD,
    ),
    Decision.CANCEL: (
        frozenset({EditionStatus.PLANNED, EditionStatus.AWAITING_APPROVAL, EditionStatus.HELD}),
        EditionStatus.CANCELLED,
    ),
}


class DecisionRefused(DigestError, ValueError):
    """The edition's state does not allow the decision (the message says why)."""


def decide(
    session: Session,
    edition_id: int,
    decision: Decision,
    *,
    at: datetime,
    admin_id: int | None = None,
) -> Edition:
    """Approve, hold or cancel edition ``edition_id``; refused with a reason when it cannot be."""
    edition = session.scalars(
        select(Edition).where(Edition.id == edition_id).with_for_update()
    ).one_or_none()
    if edition is None:
        raise DecisionRefused(f"there is no edition {edition_id}")
    sources, target = ALLOWED[decision]
    if edition.status not in sources:
        raise DecisionRefused(
            f"edition {edition_id} is {edition.status.value}: it cannot be {_past(decision)}"
        )
    if decision is Decision.CANCEL:
        gone = session.scalar(
            select(func.count()).where(
                Delivery.edition_id == edition.id,
                Delivery.status.not_in((DeliveryStatus.QUEUED, DeliveryStatus.SKIPPED)),
            )
        )
        if gone:
            raise DecisionRefused(
                f"edition {edition_id} has {gone} mail(s) sent or in progress: hold it instead"
            )
        # Its posts roll into the next edition; its unsent mails and plan go with it.
        session.execute(delete(EditionPost).where(EditionPost.edition_id == edition.id))
        session.execute(delete(Recipient).where(Recipient.edition_id == edition.id))
        session.execute(delete(Delivery).where(Delivery.edition_id == edition.id))
    edition.status = target
    edition.decided_by = admin_id
    edition.decided_at = at
    session.add(
        AuditEvent(
            at=at,
            admin_id=admin_id,
            action=f"edition_{decision.value}",
            school_id=edition.school_id,
            edition_id=edition.id,
        )
    )
    log.info("edition %s %s by admin %s", edition.id, _past(decision), admin_id)
    return edition


def run_now(
    session: Session, school_id: str, *, at: datetime, admin_id: int | None = None
) -> PlanResult:
    """An extra edition of ``school_id`` with cutoff ``at``; the next regular one starts there."""
    result = plan_edition(session, school_id, at, kind=EditionKind.EXTRA)
    session.add(
        AuditEvent(
            at=at,
            admin_id=admin_id,
            action="edition_run_now",
            school_id=school_id,
            edition_id=result.edition.id,
        )
    )
    return result


def _past(decision: Decision) -> str:
    return {"approve": "approved", "hold": "held", "cancel": "cancelled"}[decision.value]
