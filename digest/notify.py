"""Per-post mails: one mail per new post per address whose guardians chose ``email``.

A post is mailed once it has *settled* (``DIGEST_NOTIFY_SETTLE_MINUTES`` after publication), so a
teacher's quick edits land in the first mail. Each (post, address) gets at most one outbox row,
ever (a unique key), and a post that reached an address in a newsletter is not mailed again on its
own; the newsletter, in turn, leaves out the posts already mailed on their own (see ``plan``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digest.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionPost,
    Post,
    Preference,
    School,
    SkipReason,
)
from digest.plan import MAILED_ON_ITS_OWN, GuardianFacts, gather, load_school

# A post older than this is no longer news for a mail of its own (a guardian who switches to
# ``email`` gets at most this week's posts, not a backlog).
NOTIFY_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class NotifyResult:
    school_id: str
    posts: int  # settled posts in the window
    queued: int  # new per-post mails
    skipped: int  # new rows skipped (a suppressed address)


def plan_notifications(
    session: Session, school_id: str, at: datetime, *, settle: timedelta
) -> NotifyResult:
    """Queue the per-post mails of ``school_id`` due at ``at``; running it again adds nothing."""
    school = load_school(session, school_id, lock=True)  # one planner per school at a time
    first_start = session.scalar(
        select(func.min(Edition.period_start)).where(Edition.school_id == school.id)
    )
    lower = at - NOTIFY_WINDOW
    if first_start is not None:
        lower = max(lower, first_start)  # posts before the first edition are history
    post_query = select(Post.id).where(
        Post.school_id == school.id,
        Post.published_at.is_not(None),
        Post.published_at > lower,
        Post.published_at <= at - settle,
        Post.deleted_at.is_(None),
    )
    data = gather(session, school, post_query=post_query)
    if not data.posts:
        return NotifyResult(school.id, 0, 0, 0)

    by_address: dict[str, list[GuardianFacts]] = defaultdict(list)
    for guardian in data.guardians:
        if guardian.preference is Preference.EMAIL and guardian.email and not guardian.opted_out:
            by_address[guardian.email.lower()].append(guardian)
    if not by_address:
        return NotifyResult(school.id, len(data.posts), 0, 0)

    post_ids = list(data.posts)
    # Every per-post row ever made for these posts (whatever its status: the key is unique) ...
    existing = {
        (post_id, address)
        for post_id, address in session.execute(
            select(Delivery.post_id, Delivery.address).where(
                Delivery.kind == DeliveryKind.POST, Delivery.post_id.in_(post_ids)
            )
        )
    }
    # ... and the posts that reach an address in a newsletter.
    in_newsletter = {
        (post_id, address)
        for post_id, address in session.execute(
            select(EditionPost.post_id, Delivery.address)
            .join(Delivery, Delivery.edition_id == EditionPost.edition_id)
            .where(
                EditionPost.post_id.in_(post_ids),
                Delivery.kind == DeliveryKind.NEWSLETTER,
                Delivery.status.in_(MAILED_ON_ITS_OWN),
            )
        )
    }
    rows = []
    for address, sharing in sorted(by_address.items()):
        groups = frozenset().union(*(g.groups for g in sharing))
        locales = {g.locale for g in sharing}
        locale = locales.pop() if len(locales) == 1 else data.school_locale
        suppressed = any(g.suppressed for g in sharing)
        for post_id, group_id in sorted(data.posts.items()):
            key = (post_id, address)
            if group_id not in groups or key in existing or key in in_newsletter:
                continue
            rows.append(
                Delivery(
                    kind=DeliveryKind.POST,
                    school_id=school.id,
                    post_id=post_id,
                    address=address,
                    locale=locale,
                    post_ids=[post_id],
                    status=DeliveryStatus.SKIPPED if suppressed else DeliveryStatus.QUEUED,
                    reason=SkipReason.SUPPRESSED if suppressed else None,
                    attempts=0,
                )
            )
    session.add_all(rows)
    session.flush()
    skipped = sum(1 for row in rows if row.status is DeliveryStatus.SKIPPED)
    return NotifyResult(school.id, len(data.posts), len(rows) - skipped, skipped)


def school_ids(session: Session) -> list[str]:
    """Every school, for a notify pass over the whole service."""
    return list(session.scalars(select(School.id).order_by(School.id)))
