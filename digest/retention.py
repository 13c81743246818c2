"""Data retention (AVG): forget what is older than ``DIGEST_RETENTION_DAYS``; keep once-only.

Purged: outbox rows (with their frozen post lists and addresses), the plan's per-guardian
decisions, audit entries, login throttles, resolved alerts, dead processes' heartbeats and the
cached images. Kept: editions and ``edition_posts`` (a post already in an edition never goes
again), the suppression list (it protects the address's owner), and the portal's own objects
(the portal deletes those; a deleted guardian's rows go with it, see ``purge``).

An outbox row is only purged once it can no longer steer a send: it is final (sent, failed,
expired, skipped), its posts are older than the per-post window (``notify.NOTIFY_WINDOW``), and a
per-post row's post already sits in an edition. So shortening the age never re-sends a post.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, Delete, and_, delete, exists, func, not_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from digest.heartbeat import REMEMBER, forget_dead
from digest.models import (
    Alert,
    AuditEvent,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionPost,
    Guardian,
    LoginThrottle,
    Post,
    Recipient,
)
from digest.notify import NOTIFY_WINDOW
from digest.settings import Settings

log = logging.getLogger(__name__)

FINAL = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED, DeliveryStatus.SKIPPED)
# The order the report lists them in.
TABLES = (
    "deliveries",
    "recipients",
    "audit_events",
    "login_throttle",
    "alerts",
    "heartbeats",
    "cached_images",
)


@dataclass
class PurgeReport:
    """Rows (and cached image files) purged, per table, and the instant before which they were."""

    before: datetime
    counts: dict[str, int] = field(default_factory=dict)


def purge(session: Session, now: datetime, days: int) -> PurgeReport:
    """Delete the rows older than ``days`` (and a deleted guardian's mail rows) in ``session``.

    The caller commits (or rolls back, for a dry run).
    """
    before = now - timedelta(days=days)
    report = PurgeReport(before)
    doomed = select(Delivery.id).where(_purgeable(now, before))
    # Counted first: the deliveries' own delete would take these along by cascade, uncounted.
    report.counts["recipients"] = _count(
        session,
        delete(Recipient).where(
            or_(
                Recipient.delivery_id.in_(doomed),
                and_(
                    Recipient.delivery_id.is_(None),
                    Recipient.edition_id.in_(select(Edition.id).where(Edition.cutoff < before)),
                ),
            )
        ),
    )
    report.counts["deliveries"] = _count(session, delete(Delivery).where(Delivery.id.in_(doomed)))
    report.counts["audit_events"] = _count(
        session, delete(AuditEvent).where(AuditEvent.at < before)
    )
    report.counts["login_throttle"] = _count(
        session,
        delete(LoginThrottle).where(
            LoginThrottle.first_at < before,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        ),
    )
    report.counts["alerts"] = _count(
        session, delete(Alert).where(Alert.resolved_at.is_not(None), Alert.resolved_at < before)
    )
    # A heartbeat is no personal data, but a day of silence already means the process is gone.
    report.counts["heartbeats"] = forget_dead(session, now, min(REMEMBER, timedelta(days=days)))
    return report


def _purgeable(now: datetime, before: datetime) -> ColumnElement[bool]:
    """Outbox rows that are old (or whose address no guardian has any more) and can go safely."""
    window_start = now - NOTIFY_WINDOW
    address_in_use = exists().where(func.lower(Guardian.email) == Delivery.address)
    # A per-post row is the (post, address) memory of notify and of the newsletter's planning:
    # needed while its post can still be mailed on its own or put into an edition.
    post_settled = and_(
        exists().where(EditionPost.post_id == Delivery.post_id),
        exists().where(Post.id == Delivery.post_id, Post.published_at < window_start),
    )
    # A newsletter row tells notify which posts already reached the address.
    edition_settled = exists().where(
        Edition.id == Delivery.edition_id, Edition.cutoff < window_start
    )
    return and_(
        Delivery.status.in_(FINAL),
        or_(Delivery.created_at < before, not_(address_in_use)),
        or_(
            and_(Delivery.kind == DeliveryKind.POST, post_settled),
            and_(Delivery.kind == DeliveryKind.NEWSLETTER, edition_settled),
        ),
    )


def _count(session: Session, statement: Delete) -> int:
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)


def purge_cached_images(directory: Path, before: datetime, *, dry_run: bool = False) -> int:
    """Delete the cached image files last written before ``before``; returns how many."""
    if not directory.is_dir():
        return 0
    limit = before.timestamp()
    purged = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            try:
                if path.stat().st_mtime >= limit:
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:  # another process purged or replaced it meanwhile
                continue
            purged += 1
    return purged


def _media_cache_purge(settings: Settings, before: datetime, dry_run: bool) -> int:
    """The web's own cache purge (it knows the cache's layout); a dry run counts by the same age."""
    from digest.web.media import purge_media_cache

    if dry_run:
        return purge_cached_images(Path(settings.media_cache_dir), before, dry_run=True)
    return purge_media_cache(settings, before)


def run_retention(
    sessions: sessionmaker[Session],
    settings: Settings,
    now: datetime | None = None,
    *,
    days: int | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """The scheduled job: purge rows and cached images older than the age, in one transaction."""
    now = now or datetime.now(UTC)
    days = days or settings.retention_days
    with sessions() as session:
        report = purge(session, now, days)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    report.counts["cached_images"] = _media_cache_purge(settings, report.before, dry_run)
    log.info(
        "retention %s: %s",
        "dry run" if dry_run else "purge",
        ", ".join(f"{n} {table}" for table, n in report.counts.items()),
        extra={"before": report.before.isoformat(), "dry_run": dry_run},
    )
    return report
