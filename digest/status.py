"""What happened to each guardian of an edition, for administrators (CLI now, web pages later)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digest.models import Delivery, DeliveryKind, Edition, Guardian, Post, Recipient


@dataclass(frozen=True)
class GuardianStatus:
    """One line of ``digest status``: a guardian, their address and the outcome of the plan."""

    guardian_id: str
    name: str
    address: str | None
    preference: str
    status: str
    reason: str | None
    posts: int
    size: int | None
    delivery_id: int | None
    attempts: int
    next_attempt_at: datetime | None
    last_reply: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["next_attempt_at"] = self.next_attempt_at.isoformat() if self.next_attempt_at else None
        return data


def edition_status(session: Session, edition: Edition) -> list[GuardianStatus]:
    """Every guardian the plan considered (one query); a shared address shows its delivery twice."""
    rows = session.execute(
        select(Recipient, Guardian.name, Guardian.email, Delivery)
        .join(Guardian, Guardian.id == Recipient.guardian_id)
        .outerjoin(Delivery, Delivery.id == Recipient.delivery_id)
        .where(Recipient.edition_id == edition.id)
        .order_by(Guardian.name, Guardian.id)
    ).all()
    result = []
    for recipient, name, email, delivery in rows:
        if delivery is None:
            status, reason, posts, size = "skipped", recipient.reason, 0, None
        else:
            status, reason = delivery.status.value, delivery.reason
            posts, size = len(delivery.post_ids), delivery.size_bytes
        result.append(
            GuardianStatus(
                guardian_id=recipient.guardian_id,
                name=name,
                address=delivery.address if delivery else email,
                preference=recipient.preference.value,
                status=status,
                reason=reason.value if reason else None,
                posts=posts,
                size=size,
                delivery_id=delivery.id if delivery else None,
                attempts=delivery.attempts if delivery else 0,
                next_attempt_at=delivery.next_attempt_at if delivery else None,
                last_reply=delivery.last_reply if delivery else None,
            )
        )
    return result


def summarize(statuses: list[GuardianStatus]) -> dict[str, int]:
    """Guardians by outcome (``sent``, ``queued``, ``skipped:app``, …), as the demo prints them."""
    counts: dict[str, int] = {}
    for line in statuses:
        key = f"{line.status}:{line.reason}" if line.reason else line.status
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def edition_counts(session: Session, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    """``summarize`` for several editions at once (one query): guardians by outcome per edition."""
    status = func.coalesce(Delivery.status, "skipped")
    reason = func.coalesce(Delivery.reason, Recipient.reason)
    rows = session.execute(
        select(Recipient.edition_id, status, reason, func.count())
        .outerjoin(Delivery, Delivery.id == Recipient.delivery_id)
        .where(Recipient.edition_id.in_(edition_ids))
        .group_by(Recipient.edition_id, status, reason)
    ).all()
    counts: dict[int, dict[str, int]] = {edition_id: {} for edition_id in edition_ids}
    for edition_id, outcome, why, count in rows:
        key = f"{outcome}:{why}" if why else str(outcome)
        counts[edition_id][key] = count
    return {edition_id: dict(sorted(c.items())) for edition_id, c in counts.items()}


def find_edition(session: Session, school_id: str, cutoff: datetime) -> Edition | None:
    """The edition of a school with exactly this cutoff, if planned."""
    return session.scalars(
        select(Edition).where(Edition.school_id == school_id, Edition.cutoff == cutoff)
    ).one_or_none()


@dataclass(frozen=True)
class PostMailStatus:
    """One per-post mail (a guardian who chose ``email``): its post, address and outbox state."""

    delivery_id: int
    post_id: str
    address: str
    status: str
    reason: str | None
    size: int | None
    attempts: int
    next_attempt_at: datetime | None
    last_reply: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["next_attempt_at"] = self.next_attempt_at.isoformat() if self.next_attempt_at else None
        return data


def post_mail_status(
    session: Session, school_id: str, period: tuple[datetime, datetime]
) -> list[PostMailStatus]:
    """The per-post mails of the posts published in ``period`` (start exclusive, end inclusive)."""
    start, end = period
    rows = session.scalars(
        select(Delivery)
        .join(Post, Post.id == Delivery.post_id)
        .where(
            Delivery.kind == DeliveryKind.POST,
            Delivery.school_id == school_id,
            Post.published_at > start,
            Post.published_at <= end,
        )
        .order_by(Post.published_at, Delivery.post_id, Delivery.address)
    )
    return [
        PostMailStatus(
            delivery_id=row.id,
            post_id=row.post_id or "",
            address=row.address,
            status=row.status.value,
            reason=row.reason.value if row.reason else None,
            size=row.size_bytes,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_reply=row.last_reply,
        )
        for row in rows
    ]
