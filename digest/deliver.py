"""Deliver the outbox: claim due rows with a lease, render each, hand it to the transport, record.

A row is ``sending`` while claimed; it becomes ``sent`` only after the transport accepted it
(SMTP's 250). Outcomes are committed in groups (a group commit): a group is written once it holds
a connection's worth of outcomes, or the batch's last, or is ``GROUP_COMMIT_SECONDS`` old. A crash
leaves claimed rows ``sending`` until their lease expires; then they are due again and sent
again: the server may or may not have them, and a mail twice is better than a mail lost. So at
most the mails in flight at the crash (on the wire, or accepted and waiting for their commit: at
most ``UNRECORDED_PER_SLOT`` × ``DIGEST_SEND_CONCURRENCY``) can go out twice, and none is lost.

When the server blames *us* (5.7.x at MAIL FROM or AUTH, 421 4.7.x), the transport pauses: one
open ``transport_paused`` alert whose ``until`` every worker honours before it claims, doubling
from ``DIGEST_PAUSE_FIRST_MINUTES`` up to ``DIGEST_PAUSE_MAX_MINUTES``; the first accepted mail
after it resolves the alert. No parent is suppressed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from digest.bounces import suppresses_address
from digest.compose import compose_batch
from digest.content import MailContent
from digest.errors import DeliveryFailed, TransportError
from digest.links import Links
from digest.models import (
    Alert,
    AlertKind,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionStatus,
    School,
    SkipReason,
    Suppression,
    utcnow,
)
from digest.render import Renderer
from digest.settings import Settings
from digest.transports import Transport, enhanced_code

log = logging.getLogger(__name__)

DUE = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY)
SENDABLE_EDITION = (EditionStatus.PLANNED, EditionStatus.SENDING)
# Outcomes per connection that may wait for their commit while the connection sends the next
# mail: a crash repeats at most this many times the concurrency (README, "Decisions").
UNRECORDED_PER_SLOT = 2
# How long the first outcome of a group commit waits for others (at most a connection's worth
# of them) before it is written: fewer, larger transactions, the bound above unchanged.
GROUP_COMMIT_SECONDS = 0.02


@dataclass
class SendReport:
    """What one pass over the outbox did, by final row status."""

    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None  # the server blamed us: the reply, and nothing more was sent
    paused_until: datetime | None = None
    stopped: bool = False  # asked to stop: rows not yet started went back to the queue

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
    pause: str | None = None  # the server blames the sender: pause the transport
    parts_sent: int = 0


# Every plain success of a group commit in one executemany; the statement is built once.
_MARK_SENT = (
    update(Delivery.__table__)  # type: ignore[arg-type]
    .where(Delivery.__table__.c.id == bindparam("row_id"))
    .values(
        status=DeliveryStatus.SENT,
        reason=None,
        lease_until=None,
        last_reply=bindparam("reply"),
        parts_sent=bindparam("parts"),
        sent_at=bindparam("at"),
        message_id=bindparam("message"),
        size_bytes=bindparam("size"),
        next_attempt_at=None,
    )
)


def _plain_success(outcome: _Outcome) -> bool:
    """Sent, with a reply, nothing to suppress or pause: recorded without reading the row."""
    return (
        outcome.status is DeliveryStatus.SENT
        and bool(outcome.reply)
        and outcome.suppress is None
        and outcome.pause is None
    )


def _due(at: datetime, school_id: str | None) -> ColumnElement[bool]:
    """Rows due at ``at``: queued or retrying and due, or ``sending`` with an expired lease.

    A lease runs on the real clock, whatever ``at``: it guards a send in flight in some worker,
    so an operator replaying another instant (``digest send --at``) must not take it over.
    """
    ready = or_(
        and_(
            Delivery.status.in_(DUE),
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= at),
        ),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < utcnow()),
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


def claim(
    session: Session,
    at: datetime,
    limit: int,
    school_id: str | None = None,
    *,
    lease: timedelta = timedelta(minutes=10),
) -> list[int]:
    """Take up to ``limit`` due rows with a lease; other workers skip them.

    On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``, so workers on any number
    of machines take disjoint batches. SQLite has one writer at a time (its write lock is taken by
    the UPDATE below; SQLAlchemy drops SKIP LOCKED there), so the same query is safe there too.
    """
    query = select(Delivery.id).where(_due(at, school_id)).order_by(Delivery.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    candidates = list(session.scalars(query))
    if not candidates:
        return []
    # The UPDATE checks "still due" again, atomically: on SQLite another process may have
    # claimed a row between our SELECT and this statement (it takes the write lock only now).
    ids = sorted(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(candidates), _due(at, school_id))
            .values(
                status=DeliveryStatus.SENDING,
                lease_until=utcnow() + lease,  # the real clock: see _due
                attempts=Delivery.attempts + 1,
                first_attempt_at=func.coalesce(Delivery.first_attempt_at, at),
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    if ids:
        session.execute(
            update(Edition)
            .where(
                Edition.id.in_(select(Delivery.edition_id).where(Delivery.id.in_(ids))),
                Edition.status == EditionStatus.PLANNED,
            )
            .values(status=EditionStatus.SENDING)
        )
    return ids


def backoff(
    attempts: int,
    rng: random.Random | None = None,
    *,
    first: timedelta = timedelta(minutes=5),
    cap: timedelta | None = None,
    jitter: bool = True,
) -> timedelta:
    """``first`` after the first failure, doubling, with ±20 % jitter so retries spread out."""
    spread: float = (rng or random).uniform(0.8, 1.2) if jitter else 1.0
    factor: int = 2 ** min(max(attempts - 1, 0), 30)
    delay = first * factor
    if cap is not None:
        delay = min(delay, cap)
    return delay * spread


def open_pause(session: Session) -> Alert | None:
    """The open (unresolved) transport pause, in force or waiting for its first success."""
    return session.scalars(
        select(Alert).where(Alert.kind == AlertKind.TRANSPORT_PAUSED, Alert.resolved_at.is_(None))
    ).first()


def _in_force(pause: Alert | None, at: datetime) -> bool:
    """Whether ``pause`` holds sending back at ``at`` (an expired one waits for a success)."""
    return pause is not None and pause.until is not None and pause.until > at


@dataclass(frozen=True)
class _Prepared:
    delivery_id: int
    address: str
    parts: tuple[tuple[bytes, str], ...]  # (message, Message-ID) per part; empty: nothing to send
    size: int | None
    parts_sent: int = 0  # parts accepted by an earlier attempt
    skip: SkipReason = SkipReason.NO_POSTS  # why, when there are no parts
    content: MailContent | None = None  # what to render into ``parts`` just before sending


class RateLimit:
    """At most ``per_second`` sends per second across the concurrent senders (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Deliverer:
    """Sends due outbox rows through one transport; the CLI, the worker and tests share it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        transport: Transport,
        settings: Settings,
        renderer: Renderer | None = None,
        *,
        batch_size: int | None = None,
        concurrency: int | None = None,
        signer: Callable[[bytes], bytes] | None = None,
        group_commit_seconds: float = GROUP_COMMIT_SECONDS,
    ) -> None:
        self.sessions = sessions
        self._engine: Engine = sessions.kw["bind"]
        self.transport = transport
        self.settings = settings
        self.renderer = renderer or Renderer(settings)
        self.links = Links(settings)
        self.concurrency = concurrency or settings.send_concurrency
        self.batch_size = batch_size or settings.send_batch
        if settings.send_rate > 0:
            self.batch_size = self._rate_limited_batch(self.batch_size)
        self.signer = signer
        self.group_commit_seconds = group_commit_seconds
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.rate = RateLimit(settings.send_rate)
        self._stopping = False
        # On PostgreSQL claiming and reading a batch waits for the server: in a thread, the
        # sends of the batch before go on meanwhile (0.477 -> 0.520 of raw smtplib at 100,000
        # guardians). SQLite's work is the process's own, which a thread would not overlap:
        # there the same ratio (0.626, 0.625), and 9 MB more peak RSS (150 -> 159 MB).
        self._claim_in_thread = self._engine.dialect.name != "sqlite"

    def _rate_limited_batch(self, batch_size: int) -> int:
        """As many rows as a rate-limited worker sends in half a lease, all it holds counted.

        A row still waiting when its lease runs out is claimed, and sent, by another worker
        too. Besides its batch, a worker holds rows of the batch before: up to a connection's
        worth rendered ahead and a connection's worth on its connections (``_Flow``). So the
        batch is what half a lease sends, less those.
        """
        settings = self.settings
        in_half_a_lease = int(settings.send_rate * settings.lease_seconds / 2)
        fits = in_half_a_lease - 2 * self.concurrency
        if fits < 1:
            log.warning(
                "DIGEST_LEASE_SECONDS (%g) is too short for DIGEST_SEND_RATE (%g) with "
                "DIGEST_SEND_CONCURRENCY %d: claimed mails may wait past their lease and go twice",
                settings.lease_seconds,
                settings.send_rate,
                self.concurrency,
            )
        return max(1, min(batch_size, fits))

    def stop(self) -> None:
        """Finish the sends in flight, start no other; claimed rows not started go back."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(
        self,
        at: datetime,
        *,
        school_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SendReport:
        """Send everything due at ``at``; each row ends sent, failed, retry, expired or skipped.

        Batches overlap: the next one is claimed and read as soon as every mail of the current
        one is rendered, while its last mails are still with the server, so the server is not
        left waiting between batches (nor the connections at the end of each).
        """
        report = SendReport()
        flow = _Flow(self, at, report, progress)
        batches: list[asyncio.Task[None]] = []
        try:
            while not self._stopping and report.paused is None:
                if self._claim_in_thread:
                    pause, prepared = await asyncio.to_thread(self._claim_prepared, at, school_id)
                else:
                    pause, prepared = self._claim_prepared(at, school_id)
                if pause is not None and _in_force(pause, at):
                    report.paused, report.paused_until = pause.message, pause.until
                    break
                if prepared is None:  # nothing left to claim
                    break
                flow.pause_open = flow.pause_open or pause is not None
                rendered = asyncio.Event()
                batches.append(asyncio.ensure_future(flow.send(prepared, rendered)))
                # The next batch once this one is rendered (or has ended, if it failed).
                waiting = asyncio.ensure_future(rendered.wait())
                await asyncio.wait([batches[-1], waiting], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                for task in batches:
                    if task.done():
                        task.result()  # a failed batch ends the pass
                batches = [task for task in batches if not task.done()]
            await asyncio.gather(*batches)
        except Exception:
            # The other batch's mails in flight finish and are recorded before the error.
            await asyncio.gather(*batches, return_exceptions=True)
            raise
        except BaseException:  # cancelled
            for task in batches:
                task.cancel()
            raise
        if report.paused is not None and report.paused_until is None:
            # Opened by this pass: say until when.
            with self.sessions() as session:
                pause = open_pause(session)
            report.paused_until = pause.until if pause is not None else None
        report.stopped = self._stopping
        self._finish_editions()
        return report

    def _claim_prepared(
        self, at: datetime, school_id: str | None
    ) -> tuple[Alert | None, list[_Prepared] | None]:
        """The open pause, and the next batch claimed and read: None when nothing was claimed
        (nothing due, or a pause in force)."""
        with self.sessions() as session, session.begin():
            pause = open_pause(session)
            if _in_force(pause, at):
                return pause, None
            ids = claim(session, at, self.batch_size, school_id, lease=self.lease)
        return pause, self._prepare(ids, at) if ids else None

    def _prepare(self, ids: Sequence[int], at: datetime) -> list[_Prepared]:
        """What each claimed row says (consent and deletions are checked now, not at planning)."""
        with self.sessions() as session:
            deliveries = list(session.scalars(select(Delivery).where(Delivery.id.in_(ids))))
            # The batch in a handful of queries, not a handful per row.
            suppressed = set(
                session.scalars(
                    select(Suppression.address).where(
                        Suppression.address.in_({d.address for d in deliveries})
                    )
                )
            )
            contents = compose_batch(
                session, self.links, [d for d in deliveries if d.address not in suppressed]
            )
            # Held here: the session's identity map is weak, so a get() per row would be a
            # query per row.
            send_empty = {
                school_id: wanted
                for school_id, wanted in session.execute(
                    select(School.id, School.send_empty).where(
                        School.id.in_({d.school_id for d in deliveries})
                    )
                )
            }
            return [
                self._render_one(
                    delivery, contents.get(delivery.id), send_empty=send_empty[delivery.school_id]
                )
                for delivery in deliveries
            ]

    def _render_one(
        self, delivery: Delivery, content: MailContent | None, *, send_empty: bool
    ) -> _Prepared:
        if content is None:
            # Suppressed since planning (a bounce of another mail): this one would bounce too.
            return _Prepared(delivery.id, delivery.address, (), None, skip=SkipReason.SUPPRESSED)
        if content.post_count == 0 and not (
            send_empty and delivery.kind is DeliveryKind.NEWSLETTER
        ):
            return _Prepared(delivery.id, delivery.address, (), None)
        # Rendered later, a connection's worth ahead of the sends (_Flow), not here: the server
        # then reads one mail while we render the next, instead of waiting for the whole batch.
        return _Prepared(
            delivery.id, delivery.address, (), None, delivery.parts_sent, content=content
        )

    def _render(self, item: _Prepared, at: datetime) -> _Prepared:
        assert item.content is not None
        rendered = self.renderer.render_parts(item.content, now=at)
        parts = []
        for mail in rendered:
            data = mail.data  # CRLF, encoded: written directly, not through EmailMessage
            if self.signer is not None:
                data = self.signer(data)
            parts.append((data, mail.message_id))
        return replace(
            item,
            parts=tuple(parts),
            size=max(mail.size for mail in rendered),
            parts_sent=min(item.parts_sent, len(parts)),
            content=None,
        )

    async def _send_one(self, item: _Prepared, report: SendReport) -> _Outcome:
        if not item.parts and item.content is None:
            return _Outcome(item.delivery_id, DeliveryStatus.SKIPPED, item.skip)
        if report.paused is not None or self._stopping:
            return _Outcome(item.delivery_id, DeliveryStatus.QUEUED)  # back to the queue
        reply = ""
        for number in range(item.parts_sent, len(item.parts)):
            data, _ = item.parts[number]
            await self.rate.wait()
            try:
                result = await self.transport.send(
                    data, sender=self.settings.envelope_sender, recipients=[item.address]
                )
            except DeliveryFailed as failure:
                return self._failed(item, failure, report, parts_sent=number)
            except TransportError as error:
                # The transport cannot send at all (TLS policy, certificate): not this
                # address's fault. Pause like a sender-blaming reply.
                return self._pause(item, report, f"transport: {error}", parts_sent=number)
            reply = result.reply
        log.info(
            "delivery %s sent (%d part(s))",
            item.delivery_id,
            len(item.parts),
            extra={"delivery_id": item.delivery_id},
        )
        return _Outcome(
            item.delivery_id,
            DeliveryStatus.SENT,
            reply=reply,
            message_id=item.parts[0][1],
            size=item.size,
            parts_sent=len(item.parts),
        )

    def _pause(
        self, item: _Prepared, report: SendReport, reply: str, *, parts_sent: int
    ) -> _Outcome:
        first = report.paused is None
        report.paused = report.paused or reply
        return _Outcome(
            item.delivery_id,
            DeliveryStatus.QUEUED,
            reply=reply,
            pause=reply if first else None,
            parts_sent=parts_sent,
        )

    def _failed(
        self, item: _Prepared, failure: DeliveryFailed, report: SendReport, *, parts_sent: int
    ) -> _Outcome:
        log.warning(
            "delivery %s not accepted (%s): %s",
            item.delivery_id,
            failure.blame,
            failure.smtp_code,
            extra={"delivery_id": item.delivery_id},
        )
        if failure.blame == "recipient":
            # Only "no such address" (5.1.x, 5.2.1) keeps the address out of later mail; a
            # refused message (too large, content, a policy for this one recipient) fails
            # this row alone.
            unknown_address = suppresses_address(enhanced_code(failure.reply))
            return _Outcome(
                item.delivery_id,
                DeliveryStatus.FAILED,
                reply=failure.reply,
                suppress=item.address if unknown_address else None,
                parts_sent=parts_sent,
            )
        if failure.blame == "sender":
            return self._pause(item, report, failure.reply, parts_sent=parts_sent)
        return _Outcome(
            item.delivery_id, DeliveryStatus.RETRY, reply=failure.reply, parts_sent=parts_sent
        )

    def _record_many(self, outcomes: Sequence[_Outcome], at: datetime) -> list[DeliveryStatus]:
        """Write outcomes in one transaction; each row's final status, in order."""
        # A plain success needs nothing read: one UPDATE for all of them. The rest go through
        # the row (a retry's schedule depends on its attempts and first attempt).
        plain = [o for o in outcomes if _plain_success(o)]
        other = [o for o in outcomes if not _plain_success(o)]
        rows = [
            {
                "row_id": o.delivery_id,
                "reply": o.reply,
                "parts": o.parts_sent,
                "message": o.message_id,
                "size": o.size,
                "at": at,
            }
            for o in plain
        ]
        if not other:  # the common case, without an ORM session's bookkeeping
            with self._engine.begin() as connection:
                connection.execute(_MARK_SENT, rows)
            return [DeliveryStatus.SENT] * len(outcomes)
        with self.sessions() as session, session.begin():
            if plain:
                session.connection().execute(_MARK_SENT, rows)
            if other:
                ids = [outcome.delivery_id for outcome in other]
                list(session.scalars(select(Delivery).where(Delivery.id.in_(ids))))  # one query
            recorded = {o.delivery_id: self._record(session, o, at) for o in other}
        return [recorded.get(o.delivery_id, DeliveryStatus.SENT) for o in outcomes]

    def _record(self, session: Session, outcome: _Outcome, at: datetime) -> DeliveryStatus:
        """Write one outcome; the row's final status (a retry past the maximum age expires)."""
        settings = self.settings
        row = session.get_one(Delivery, outcome.delivery_id)
        row.status = outcome.status
        row.reason = outcome.reason
        row.lease_until = None
        row.last_reply = outcome.reply or row.last_reply
        row.parts_sent = max(row.parts_sent, outcome.parts_sent)
        if outcome.status is DeliveryStatus.SENT:
            row.sent_at = at
            row.message_id = outcome.message_id
            row.size_bytes = outcome.size
            row.next_attempt_at = None
        elif outcome.status is DeliveryStatus.RETRY:
            give_up_at = (row.first_attempt_at or at) + timedelta(hours=settings.retry_max_hours)
            if at >= give_up_at:
                row.status = DeliveryStatus.EXPIRED
                row.next_attempt_at = None
                log.warning(
                    "delivery %s expired after %d attempts",
                    row.id,
                    row.attempts,
                    extra={"delivery_id": row.id},
                )
            else:
                first = timedelta(minutes=settings.retry_first_minutes)
                # The last try falls on the maximum age, not a doubled delay beyond it.
                row.next_attempt_at = min(at + backoff(row.attempts, first=first), give_up_at)
        elif outcome.status is DeliveryStatus.QUEUED:
            row.attempts = max(row.attempts - 1, 0)  # not this address's fault
        if outcome.suppress and session.get(Suppression, outcome.suppress) is None:
            session.add(
                Suppression(address=outcome.suppress, reason=outcome.reply or "", created_at=at)
            )
        if outcome.pause:
            self._open_pause(session, outcome.pause, at)
        return row.status

    def _open_pause(self, session: Session, reply: str, at: datetime) -> None:
        """Open the transport pause (or lengthen the open one): an alert every worker honours."""
        alert = open_pause(session)
        if alert is None:
            alert = Alert(kind=AlertKind.TRANSPORT_PAUSED, message=reply, count=0, created_at=at)
            session.add(alert)
        alert.count += 1
        alert.message = reply
        alert.updated_at = at
        alert.until = at + backoff(
            alert.count,
            jitter=False,  # one pause for all workers: nothing to spread
            first=timedelta(minutes=self.settings.pause_first_minutes),
            cap=timedelta(minutes=self.settings.pause_max_minutes),
        )
        log.error(
            "alert: transport paused until %s (pause %d): the mail server refuses our mail",
            alert.until.isoformat(),
            alert.count,
        )

    def _resolve_pause(self, at: datetime) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Alert)
                .where(Alert.kind == AlertKind.TRANSPORT_PAUSED, Alert.resolved_at.is_(None))
                .values(resolved_at=at, updated_at=at)
            )
        log.info("transport pause resolved: mail is accepted again")

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


class _Flow:
    """One pass's sending: its batches share the connections, the group commit and the renderer.

    Each mail is rendered ahead of its connection, at most a connection's worth ahead: when a
    connection frees up, its next mail goes out at once, and the rendering happens while the
    connections wait for the server's replies.
    """

    def __init__(
        self,
        deliverer: Deliverer,
        at: datetime,
        report: SendReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.deliverer = deliverer
        self.at = at
        self.report = report
        self.progress = progress
        self.pause_open = False  # an expired pause is open: the first accepted mail resolves it
        concurrency = deliverer.concurrency
        self.gate = asyncio.Semaphore(concurrency)  # sends on the wire
        self.ahead = asyncio.Semaphore(concurrency)  # rendered, waiting for a connection
        # Sent or sending but not yet committed: what a crash could send twice.
        self.unrecorded = asyncio.Semaphore(UNRECORDED_PER_SLOT * concurrency)
        self.rendering = asyncio.Lock()  # one batch renders at a time, in claim order
        self.pending: list[tuple[_Outcome, asyncio.Future[DeliveryStatus]]] = []
        self.writing = asyncio.Lock()
        self.group_full = asyncio.Event()
        self.group_size = concurrency
        self.to_come = 0  # outcomes of the batches so far not yet handed to record()

    async def send(self, prepared: list[_Prepared], rendered: asyncio.Event) -> None:
        """Send one claimed batch; ``rendered`` is set once every mail of it is rendered."""
        self.to_come += len(prepared)
        loop = asyncio.get_running_loop()
        ready: list[asyncio.Future[_Prepared]] = [loop.create_future() for _ in prepared]
        renderer = asyncio.ensure_future(self._render_all(prepared, ready, rendered))
        try:
            # Every mail's send runs to its end, and is recorded, before a failure is raised.
            outcomes = await asyncio.gather(
                *(self._one(item, done) for item, done in zip(prepared, ready, strict=True)),
                return_exceptions=True,
            )
        finally:
            renderer.cancel()
            rendered.set()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _render_all(
        self,
        prepared: list[_Prepared],
        ready: list[asyncio.Future[_Prepared]],
        rendered: asyncio.Event,
    ) -> None:
        deliverer, report = self.deliverer, self.report
        async with self.rendering:
            for item, done in zip(prepared, ready, strict=True):
                if item.content is None:
                    done.set_result(item)  # nothing to render (skipped or suppressed)
                    continue
                await self.ahead.acquire()
                if report.paused is not None or deliverer.stopping:
                    self.ahead.release()
                    done.set_result(item)  # goes back to the queue unrendered
                    continue
                try:
                    done.set_result(deliverer._render(item, self.at))
                except Exception as exc:
                    self.ahead.release()  # no connection takes it
                    done.set_exception(exc)
                # The replies that arrived meanwhile are read before the next mail renders.
                await asyncio.sleep(0)
        rendered.set()

    async def _one(self, item: _Prepared, ready: asyncio.Future[_Prepared]) -> None:
        deliverer, report = self.deliverer, self.report
        async with self.unrecorded:
            try:
                item = await ready
            except BaseException:
                self.to_come -= 1
                raise
            async with self.gate:
                if item.parts:
                    self.ahead.release()  # rendered: its connection has taken it
                outcome = await deliverer._send_one(item, report)
                if outcome.status is DeliveryStatus.SENT and self.pause_open:
                    self.pause_open = False
                    deliverer._resolve_pause(self.at)
            # The connection's slot is free while the outcome waits for its commit: held
            # through the commit, every slot stalled on each fsync.
            status = await self._record(outcome)
        report.add(status.value)
        if self.progress:
            self.progress(1)

    async def _record(self, outcome: _Outcome) -> DeliveryStatus:
        # Committed within moments, not with the batch: a crash repeats only what was in
        # flight. The first outcome of a group writes, in one transaction, every outcome that
        # arrived until the group was a connection's worth, the last one to come, or
        # GROUP_COMMIT_SECONDS old, and after the previous write was done (a group commit);
        # the write runs in a thread, so the other sends go on meanwhile.
        future: asyncio.Future[DeliveryStatus] = asyncio.get_running_loop().create_future()
        pending = self.pending
        pending.append((outcome, future))
        self.to_come -= 1
        if len(pending) >= self.group_size or self.to_come == 0:
            self.group_full.set()
        if len(pending) == 1:
            async with self.writing:
                if len(pending) < self.group_size and self.to_come > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.group_full.wait(), self.deliverer.group_commit_seconds
                        )
                self.group_full.clear()
                batch = pending[:]
                pending.clear()
                try:
                    statuses = await asyncio.to_thread(
                        self.deliverer._record_many, [queued for queued, _ in batch], self.at
                    )
                except Exception as exc:
                    for _, waiting in batch:
                        waiting.set_exception(exc)
                else:
                    for (_, waiting), final in zip(batch, statuses, strict=True):
                        waiting.set_result(final)
        return await future
