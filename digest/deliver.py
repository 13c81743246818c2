"""Deliver the outbox: claim due rows with a lease, render each, hand it to the transport, record.

A row is ``sending`` while claimed; it becomes ``sent`` only after the transport accepted it
(SMTP's 250). A crash leaves claimed rows ``sending`` until their lease expires, when they are due
again: at most the mails in flight at the crash can go out twice, none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.policy import SMTP

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from digest.compose import compose_delivery
from digest.errors import DeliveryFailed, TransportError
from digest.links import Links
from digest.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionStatus,
    School,
    SkipReason,
    Suppression,
)
from digest.render import Renderer
from digest.settings import Settings
from digest.transports import Transport, enhanced_code

log = logging.getLogger(__name__)

DUE = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY)
SENDABLE_EDITION = (EditionStatus.PLANNED, EditionStatus.SENDING)
LEASE = timedelta(minutes=10)
FIRST_RETRY = timedelta(minutes=5)
MAX_AGE = timedelta(hours=48)


@dataclass
class SendReport:
    """What one pass over the outbox did, by final row status."""

    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None  # the server blamed us: the reply, and nothing more was sent

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


@dataclass(frozen=True)
class _Outcome:
    delivery_id: int
    status: DeliveryStatus
    reason: SkipReason | None = None
    reply: str | None = None
    message_id: str | None = None
    size: int | None = None
    suppress: str | None = None  # an address to suppress, with ``reply`` as the reason
    next_attempt_at: datetime | None = None


def _due(at: datetime, school_id: str | None) -> ColumnElement[bool]:
    """Rows due at ``at``: queued or retrying and due, or ``sending`` with an expired lease."""
    ready = or_(
        and_(
            Delivery.status.in_(DUE),
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= at),
        ),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < at),
    )
    edition_ok = or_(
        Delivery.edition_id.is_(None),
        exists().where(Edition.id == Delivery.edition_id, Edition.status.in_(SENDABLE_EDITION)),
    )
    conditions = [ready, edition_ok]
    if school_id is not None:
        conditions.append(Delivery.school_id == school_id)
    return and_(*conditions)


def count_due(session: Session, at: datetime, school_id: str | None = None) -> int:
    """How many outbox rows are due at ``at``."""
    return int(session.scalar(select(func.count()).where(_due(at, school_id))) or 0)


def claim(session: Session, at: datetime, limit: int, school_id: str | None = None) -> list[int]:
    """Take up to ``limit`` due rows with a lease; other workers skip them (PostgreSQL)."""
    query = select(Delivery.id).where(_due(at, school_id)).order_by(Delivery.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                status=DeliveryStatus.SENDING,
                lease_until=at + LEASE,
                attempts=Delivery.attempts + 1,
                first_attempt_at=func.coalesce(Delivery.first_attempt_at, at),
            )
        )
        session.execute(
            update(Edition)
            .where(
                Edition.id.in_(select(Delivery.edition_id).where(Delivery.id.in_(ids))),
                Edition.status == EditionStatus.PLANNED,
            )
            .values(status=EditionStatus.SENDING)
        )
    return ids


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """5 minutes after the first failure, doubling, with ±20 % jitter so retries spread out."""
    jitter: float = (rng or random).uniform(0.8, 1.2)
    factor: int = 2 ** max(attempts - 1, 0)
    return FIRST_RETRY * factor * jitter


@dataclass(frozen=True)
class _Prepared:
    delivery_id: int
    address: str
    data: bytes | None
    message_id: str | None
    size: int | None


class Deliverer:
    """Sends due outbox rows through one transport; the CLI, the worker and tests share it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        transport: Transport,
        settings: Settings,
        renderer: Renderer | None = None,
        *,
        batch_size: int = 50,
        concurrency: int = 8,
    ) -> None:
        self.sessions = sessions
        self.transport = transport
        self.settings = settings
        self.renderer = renderer or Renderer(settings)
        self.links = Links(settings)
        self.batch_size = batch_size
        self.concurrency = concurrency

    async def run(
        self,
        at: datetime,
        *,
        school_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SendReport:
        """Send everything due at ``at``; each row ends sent, failed, retry or skipped."""
        report = SendReport()
        while report.paused is None:
            with self.sessions() as session, session.begin():
                ids = claim(session, at, self.batch_size, school_id)
            if not ids:
                break
            prepared = self._prepare(ids, at)
            outcomes = await self._send_all(prepared, at, report)
            self._record(outcomes, at)
            for outcome in outcomes:
                report.add(outcome.status.value)
            if progress:
                progress(len(ids))
        self._finish_editions()
        return report

    def _prepare(self, ids: Sequence[int], at: datetime) -> list[_Prepared]:
        """Render each claimed row (consent and deletions are checked now, not at planning)."""
        prepared = []
        with self.sessions() as session:
            for delivery in session.scalars(select(Delivery).where(Delivery.id.in_(ids))):
                prepared.append(self._render_one(session, delivery, at))
        return prepared

    def _render_one(self, session: Session, delivery: Delivery, at: datetime) -> _Prepared:
        content = compose_delivery(session, self.links, delivery)
        school = session.get_one(School, delivery.school_id)
        if content.post_count == 0 and not (
            school.send_empty and delivery.kind is DeliveryKind.NEWSLETTER
        ):
            return _Prepared(delivery.id, delivery.address, None, None, None)
        rendered = self.renderer.render(content, now=at)
        return _Prepared(
            delivery_id=delivery.id,
            address=delivery.address,
            data=rendered.message.as_bytes(policy=SMTP),
            message_id=str(rendered.message["Message-ID"]),
            size=rendered.size,
        )

    async def _send_all(
        self, prepared: list[_Prepared], at: datetime, report: SendReport
    ) -> list[_Outcome]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: _Prepared) -> _Outcome:
            if item.data is None:
                return _Outcome(item.delivery_id, DeliveryStatus.SKIPPED, SkipReason.NO_POSTS)
            if report.paused is not None:
                return _Outcome(item.delivery_id, DeliveryStatus.QUEUED)
            async with gate:
                try:
                    result = await self.transport.send(
                        item.data, sender=self.settings.mail_from, recipients=[item.address]
                    )
                except DeliveryFailed as failure:
                    return self._failed(item, failure, report)
                except TransportError as error:
                    # The transport cannot send at all (TLS policy, certificate): stop the run
                    # and give the row back, it is not this address's fault.
                    report.paused = str(error)
                    log.error("transport stopped: %s", type(error).__name__)
                    return _Outcome(item.delivery_id, DeliveryStatus.QUEUED)
            log.info("delivery %s sent", item.delivery_id)
            return _Outcome(
                item.delivery_id,
                DeliveryStatus.SENT,
                reply=result.reply,
                message_id=item.message_id,
                size=item.size,
            )

        return list(await asyncio.gather(*(one(item) for item in prepared)))

    def _failed(self, item: _Prepared, failure: DeliveryFailed, report: SendReport) -> _Outcome:
        log.warning(
            "delivery %s not accepted (%s): %s", item.delivery_id, failure.blame, failure.smtp_code
        )
        if failure.blame == "recipient":
            # Only "no such address" (5.1.x, 5.2.1) keeps the address out of later mail; a
            # refused message (too large, content) fails this row alone.
            code = enhanced_code(failure.reply) or ""
            unknown_address = code.startswith("5.1.") or code == "5.2.1"
            return _Outcome(
                item.delivery_id,
                DeliveryStatus.FAILED,
                reply=failure.reply,
                suppress=item.address if unknown_address else None,
            )
        if failure.blame == "sender":
            report.paused = failure.reply
            log.error("transport paused: the server refuses our mail (code %s)", failure.smtp_code)
            return _Outcome(item.delivery_id, DeliveryStatus.QUEUED, reply=failure.reply)
        return _Outcome(item.delivery_id, DeliveryStatus.RETRY, reply=failure.reply)

    def _record(self, outcomes: list[_Outcome], at: datetime) -> None:
        with self.sessions() as session, session.begin():
            rows = {
                d.id: d
                for d in session.scalars(
                    select(Delivery).where(Delivery.id.in_([o.delivery_id for o in outcomes]))
                )
            }
            for outcome in outcomes:
                row = rows[outcome.delivery_id]
                row.status = outcome.status
                row.reason = outcome.reason
                row.lease_until = None
                row.last_reply = outcome.reply or row.last_reply
                if outcome.status is DeliveryStatus.SENT:
                    row.sent_at = at
                    row.message_id = outcome.message_id
                    row.size_bytes = outcome.size
                    row.next_attempt_at = None
                elif outcome.status is DeliveryStatus.RETRY:
                    if at - (row.first_attempt_at or at) >= MAX_AGE:
                        row.status = DeliveryStatus.EXPIRED
                    else:
                        row.next_attempt_at = at + backoff(row.attempts)
                elif outcome.status is DeliveryStatus.QUEUED:
                    row.attempts = max(row.attempts - 1, 0)  # not this address's fault
                if outcome.suppress and session.get(Suppression, outcome.suppress) is None:
                    session.add(
                        Suppression(
                            address=outcome.suppress, reason=outcome.reply or "", created_at=at
                        )
                    )

    def _finish_editions(self) -> None:
        """An edition is done when none of its rows can still be sent."""
        open_rows = exists().where(
            Delivery.edition_id == Edition.id,
            Delivery.status.in_((*DUE, DeliveryStatus.SENDING)),
        )
        with self.sessions() as session, session.begin():
            session.execute(
                update(Edition)
                .where(Edition.status.in_(SENDABLE_EDITION), ~open_rows)
                .values(status=EditionStatus.DONE)
            )
