"""Plan an edition: which posts it carries and, for every guardian, a mail or a reason why not.

The work is split in three: ``gather`` loads what a decision needs in a handful of set-based
queries, ``decide`` is a pure function over that data, and ``plan_edition`` writes the outcome.
Preview uses ``gather`` and ``decide`` without writing, so it shows what planning would do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, case, exists, func, insert, literal, select, union
from sqlalchemy.orm import Session

from digest.db import insert_rows
from digest.errors import DigestError, UnknownSchool
from digest.models import (
    Base,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionPost,
    EditionStatus,
    Group,
    GroupKind,
    Guardian,
    Post,
    Preference,
    School,
    SkipReason,
    Suppression,
    child_groups,
    guardian_children,
    guardian_groups,
    utcnow,
)
from digest.periods import previous_regular_cutoff
from digest.status import edition_status, summarize

# A per-post mail in one of these states has reached (or will reach) the address on its own.
MAILED_ON_ITS_OWN = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.RETRY,
)


class PlanError(DigestError, ValueError):
    """An edition cannot be planned as asked."""


@dataclass(frozen=True)
class GuardianFacts:
    """What the plan needs to know of one guardian."""

    id: str
    name: str
    email: str | None
    locale: str
    preference: Preference
    opted_out: bool
    groups: frozenset[str]
    suppressed: bool = False


@dataclass(frozen=True)
class PlanInput:
    school_id: str
    school_locale: str
    send_empty: bool
    posts: dict[str, str]  # post id -> group id, the edition's posts
    guardians: list[GuardianFacts]
    mailed: frozenset[tuple[str, str]] = frozenset()  # (post id, lower-cased address)


@dataclass(frozen=True)
class AddressPlan:
    """One mail to one address (shared by the guardians listed), or a skip of that address."""

    address: str
    guardian_ids: tuple[str, ...]
    names: tuple[str, ...]
    locale: str
    post_ids: tuple[str, ...]
    reason: SkipReason | None  # None: queued


@dataclass(frozen=True)
class PlanDecision:
    mails: list[AddressPlan]
    skipped: dict[str, SkipReason]  # guardians with no mail at all, and why
    preferences: dict[str, Preference] = field(default_factory=dict)


class PreferenceFacts(Protocol):
    """What ``effective_preference`` reads: a Guardian, or a row of the same columns."""

    @property
    def delivery(self) -> Preference: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def portal_account(self) -> bool: ...
    @property
    def preferences_updated_at(self) -> datetime | None: ...
    @property
    def local_delivery(self) -> Preference | None: ...
    @property
    def local_locale(self) -> str | None: ...
    @property
    def local_choice_at(self) -> datetime | None: ...
    @property
    def opted_out_at(self) -> datetime | None: ...


class _GuardianRow(NamedTuple):
    """A guardian's columns that planning reads, as a plain tuple.

    Not SQLAlchemy's Row: reading a Row's column by name raised and caught an AttributeError
    inside: for the dozen names read per guardian, about 15 % of planning's CPU.
    """

    id: str
    name: str
    email: str | None
    locale: str | None
    delivery: Preference
    portal_account: bool
    preferences_updated_at: datetime | None
    local_delivery: Preference | None
    local_locale: str | None
    local_choice_at: datetime | None
    opted_out_at: datetime | None
    suppressed: bool  # the address is on the suppression list
    groups: str | None  # the group ids, joined by _GROUP_SEPARATOR


# The guardian columns of a _GuardianRow, selected as plain rows (no ORM objects).
_GUARDIAN_FACTS = tuple(getattr(Guardian, name) for name in _GuardianRow._fields[:-2])
# Joins a guardian's group ids in one column: no id holds a control character (digest.contract).
_GROUP_SEPARATOR = "\x1f"


def effective_preference(guardian: PreferenceFacts) -> tuple[Preference, bool, str | None]:
    """A guardian's preference, opt-out and locale after weighing local choices against imports.

    A choice made through the service wins until the portal sends a newer
    ``preferences_updated_at``. Without a portal account the newsletter is the floor: the app
    cannot reach such a parent.
    """
    local_wins = guardian.local_choice_at is not None and (
        guardian.preferences_updated_at is None
        or guardian.local_choice_at >= guardian.preferences_updated_at
    )
    preference = guardian.delivery
    locale = guardian.locale
    opted_out = False
    if local_wins:
        preference = guardian.local_delivery or preference
        locale = guardian.local_locale or locale
        opted_out = guardian.opted_out_at is not None
    if not guardian.portal_account and not (local_wins and preference is Preference.EMAIL):
        preference = Preference.NEWSLETTER
    return preference, opted_out, locale


def decide(data: PlanInput) -> PlanDecision:
    """Every guardian's outcome: a share of one mail per address, or a skip reason."""
    skipped: dict[str, SkipReason] = {}
    by_address: dict[str, list[GuardianFacts]] = defaultdict(list)
    for guardian in data.guardians:
        if guardian.opted_out:
            skipped[guardian.id] = SkipReason.OPTED_OUT
        elif guardian.preference is Preference.APP:
            skipped[guardian.id] = SkipReason.APP
        elif not guardian.email:
            skipped[guardian.id] = SkipReason.UNREACHABLE
        elif guardian.preference is Preference.EMAIL:
            skipped[guardian.id] = SkipReason.PER_POST
        else:
            by_address[guardian.email.lower()].append(guardian)

    mails = []
    for address, sharing in sorted(by_address.items()):
        groups = frozenset().union(*(g.groups for g in sharing))
        post_ids = tuple(
            sorted(
                post_id
                for post_id, group_id in data.posts.items()
                if group_id in groups and (post_id, address) not in data.mailed
            )
        )
        locales = {g.locale for g in sharing}
        reason = None
        if any(g.suppressed for g in sharing):
            reason = SkipReason.SUPPRESSED
        elif not post_ids and not data.send_empty:
            reason = SkipReason.NO_POSTS
        mails.append(
            AddressPlan(
                address=address,
                guardian_ids=tuple(g.id for g in sharing),
                names=tuple(g.name for g in sharing),
                locale=locales.pop() if len(locales) == 1 else data.school_locale,
                post_ids=post_ids,
                reason=reason,
            )
        )
    preferences = {g.id: g.preference for g in data.guardians}
    return PlanDecision(mails=mails, skipped=skipped, preferences=preferences)


def in_holiday(cutoff: datetime, school: School) -> str | None:
    """The name of the school holiday that the cutoff's local date falls in, if any."""
    day = cutoff.astimezone(ZoneInfo(school.timezone)).date()
    for holiday in school.holidays or []:
        if date.fromisoformat(holiday["start"]) <= day <= date.fromisoformat(holiday["end"]):
            return str(holiday.get("name") or "holiday")
    return None


def _candidate_posts(school_id: str, history_start: datetime, cutoff: datetime) -> Select[Any]:
    """Visible posts up to the cutoff, after the school's history, not yet in any edition."""
    return select(Post.id).where(
        Post.school_id == school_id,
        Post.published_at.is_not(None),
        Post.published_at > history_start,
        Post.published_at <= cutoff,
        Post.deleted_at.is_(None),
        ~exists().where(EditionPost.post_id == Post.id),
    )


def gather(session: Session, school: School, *, post_query: Select[Any]) -> PlanInput:
    """Load the posts (ids from ``post_query``), guardians, memberships and mail history.

    Two queries whatever the school's size: the posts with the addresses that already got each
    on its own, and the guardians with their suppression and every group they belong to.
    """
    mailed_on_its_own = and_(
        Delivery.post_id == Post.id,
        Delivery.kind == DeliveryKind.POST,
        Delivery.school_id == school.id,
        Delivery.status.in_(MAILED_ON_ITS_OWN),
    )
    posts: dict[str, str] = {}
    mailed: set[tuple[str, str]] = set()
    for post_id, group_id, address in session.execute(
        select(Post.id, Post.group_id, Delivery.address)
        .outerjoin(Delivery, mailed_on_its_own)
        .where(Post.id.in_(post_query))
    ):
        posts[post_id] = group_id
        if address is not None:
            mailed.add((post_id, address.lower()))

    memberships = union(
        select(guardian_children.c.guardian_id, child_groups.c.group_id)
        .join(child_groups, child_groups.c.child_id == guardian_children.c.child_id)
        .join(Guardian, Guardian.id == guardian_children.c.guardian_id)
        .where(Guardian.school_id == school.id),
        select(guardian_groups.c.guardian_id, guardian_groups.c.group_id)
        .join(Guardian, Guardian.id == guardian_groups.c.guardian_id)
        .where(Guardian.school_id == school.id),
        select(Guardian.id, Group.id)
        .join(Group, and_(Group.school_id == Guardian.school_id, Group.kind == GroupKind.SCHOOL))
        .where(Guardian.school_id == school.id),
    ).subquery()
    suppressed = exists().where(Suppression.address == func.lower(Guardian.email))
    # A row per guardian, its groups in one string: a row per membership repeated the
    # guardian's facts three or four times over, and reading them was half of planning.
    groups = func.aggregate_strings(memberships.c.group_id, _GROUP_SEPARATOR)
    guardians = []
    rows = session.execute(
        select(*_GUARDIAN_FACTS, suppressed.label("suppressed"), groups.label("groups"))
        .outerjoin(memberships, memberships.c.guardian_id == Guardian.id)
        .where(Guardian.school_id == school.id)
        .group_by(Guardian.id)
        .order_by(Guardian.id)
    )
    for guardian in map(_GuardianRow._make, rows):
        preference, opted_out, locale = effective_preference(guardian)
        guardians.append(
            GuardianFacts(
                id=guardian.id,
                name=guardian.name,
                email=guardian.email,
                locale=locale or school.locale,
                preference=preference,
                opted_out=opted_out,
                groups=frozenset(guardian.groups.split(_GROUP_SEPARATOR))
                if guardian.groups
                else frozenset(),
                suppressed=bool(guardian.suppressed),
            )
        )
    return PlanInput(
        school_id=school.id,
        school_locale=school.locale,
        send_empty=school.send_empty,
        posts=posts,
        guardians=guardians,
        mailed=frozenset((p, a.lower()) for p, a in mailed if p),
    )


@dataclass(frozen=True)
class PlanResult:
    edition: Edition
    created: bool
    counts: dict[str, int]


def _history_and_previous(
    session: Session, school: School, cutoff: datetime
) -> tuple[datetime | None, datetime | None, bool, datetime | None]:
    """(previous live cutoff, first period start, exists already, latest cutoff): one query."""
    live = Edition.status != EditionStatus.CANCELLED
    row = session.execute(
        select(
            func.max(case((and_(Edition.cutoff < cutoff, live), Edition.cutoff))),
            func.min(Edition.period_start),
            func.count(case((Edition.cutoff == cutoff, literal(1)))),
            func.max(Edition.cutoff),
        ).where(Edition.school_id == school.id)
    ).one()
    return row[0], row[1], bool(row[2]), row[3]


def _period(
    school: School, cutoff: datetime, previous: datetime | None, first_start: datetime | None
) -> tuple[datetime, datetime]:
    """(period start, history start): posts at or before the history start are never news."""
    period_start = previous or previous_regular_cutoff(
        cutoff, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
    )
    history_start = min(first_start, period_start) if first_start else period_start
    return period_start, history_start


def upcoming_posts(
    session: Session, school: School, cutoff: datetime
) -> tuple[datetime, Select[Any]]:
    """(period start, query of post ids) of an edition not planned yet, as planning would take."""
    previous, first_start, _, _ = _history_and_previous(session, school, cutoff)
    period_start, history_start = _period(school, cutoff, previous, first_start)
    return period_start, _candidate_posts(school.id, history_start, cutoff)


def load_school(session: Session, school_id: str, *, lock: bool = False) -> School:
    """The school, locked against concurrent planning when ``lock`` (PostgreSQL)."""
    query = select(School).where(School.id == school_id)
    if lock:
        query = query.with_for_update()
    school = session.scalars(query).one_or_none()
    if school is None:
        raise UnknownSchool(school_id)
    return school


def plan_edition(
    session: Session,
    school_id: str,
    cutoff: datetime,
    *,
    kind: EditionKind = EditionKind.REGULAR,
    late_seconds: int | None = None,
) -> PlanResult:
    """Plan the edition of ``school_id`` ending at ``cutoff``; planning it again is a no-op.

    ``kind`` is ``extra`` for an administrator's "run now" (cutoff: that moment); the next regular
    edition starts where it ended. ``late_seconds`` records a scheduled run that started late.
    """
    school = load_school(session, school_id, lock=True)
    previous, first_start, exists_already, latest = _history_and_previous(session, school, cutoff)
    if exists_already:
        edition = session.scalars(
            select(Edition).where(Edition.school_id == school.id, Edition.cutoff == cutoff)
        ).one()
        return PlanResult(
            edition=edition, created=False, counts=summarize(edition_status(session, edition))
        )
    if latest is not None and latest > cutoff:
        raise PlanError(
            f"school {school.id} already has an edition ending {latest.isoformat()}, "
            f"after {cutoff.isoformat()}"
        )
    period_start, history_start = _period(school, cutoff, previous, first_start)
    if kind is EditionKind.REGULAR and in_holiday(cutoff, school):
        status = EditionStatus.SKIPPED_HOLIDAY
    elif school.requires_approval:
        status = EditionStatus.AWAITING_APPROVAL
    else:
        status = EditionStatus.PLANNED
    edition = Edition(
        school_id=school.id,
        cutoff=cutoff,
        period_start=period_start,
        status=status,
        planned_at=utcnow(),
        kind=kind,
        late_seconds=late_seconds,
    )
    session.add(edition)
    session.flush()
    if status is EditionStatus.SKIPPED_HOLIDAY:
        # No posts are claimed: they roll into the first edition after the holiday.
        return PlanResult(edition=edition, created=True, counts={})

    session.execute(
        insert(EditionPost).from_select(
            ["post_id", "edition_id"],
            select(Post.id, literal(edition.id)).where(
                Post.id.in_(_candidate_posts(school.id, history_start, cutoff))
            ),
        )
    )
    data = gather(
        session,
        school,
        post_query=select(EditionPost.post_id).where(EditionPost.edition_id == edition.id),
    )
    decision = decide(data)
    _write_decision(session, school, edition, decision)
    return PlanResult(edition=edition, created=True, counts=decision_counts(decision))


def _write_decision(
    session: Session, school: School, edition: Edition, decision: PlanDecision
) -> None:
    recipients: list[dict[str, object]] = [
        {
            "edition_id": edition.id,
            "guardian_id": guardian_id,
            "delivery_id": None,
            "reason": reason,
            "preference": decision.preferences[guardian_id],
        }
        for guardian_id, reason in decision.skipped.items()
    ]
    if decision.mails:
        now = utcnow()
        rows = [
            {
                "kind": DeliveryKind.NEWSLETTER,
                "school_id": school.id,
                "edition_id": edition.id,
                "address": mail.address,
                "locale": mail.locale,
                "post_ids": list(mail.post_ids),
                "status": DeliveryStatus.SKIPPED if mail.reason else DeliveryStatus.QUEUED,
                "reason": mail.reason,
                "attempts": 0,
                "created_at": now,
            }
            for mail in decision.mails
        ]
        ids = {
            address: delivery_id
            for address, delivery_id in session.execute(
                insert(Delivery).returning(Delivery.address, Delivery.id), rows
            )
        }
        for mail in decision.mails:
            for guardian_id in mail.guardian_ids:
                recipients.append(
                    {
                        "edition_id": edition.id,
                        "guardian_id": guardian_id,
                        "delivery_id": ids[mail.address],
                        "reason": None,
                        "preference": decision.preferences[guardian_id],
                    }
                )
    # The table's rows, not the ORM's bulk insert, which splits the rows by which values are
    # None (skipped: no delivery; queued: no reason) into two statements.
    insert_rows(session, Base.metadata.tables["recipients"], recipients)


def decision_counts(decision: PlanDecision) -> dict[str, int]:
    """Guardians by planned outcome, counted from the decision itself (no query)."""
    counts: dict[str, int] = defaultdict(int)
    for reason in decision.skipped.values():
        counts[f"skipped:{reason.value}"] += 1
    for mail in decision.mails:
        key = f"skipped:{mail.reason.value}" if mail.reason else "queued"
        counts[key] += len(mail.guardian_ids)
    return dict(counts)
