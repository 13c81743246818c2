"""Build what a mail says from the store at render time, so consent is checked as late as can be."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from digest.content import (
    MAX_THUMBNAILS,
    EventInfo,
    GroupSection,
    LinkInfo,
    MailContent,
    Photo,
    PostContent,
    SchoolInfo,
    SignupInfo,
)
from digest.links import Links
from digest.models import (
    Child,
    Delivery,
    DeliveryKind,
    Edition,
    Event,
    Group,
    GroupKind,
    Guardian,
    Media,
    MediaType,
    PhotoConsent,
    Post,
    PostKind,
    Recipient,
    School,
    media_children,
)
from digest.periods import iso_week
from digest.sanitize import clean_teacher_html

LANGUAGES = ("nl", "en")
MAIL_CONSENT = (PhotoConsent.EMAIL, PhotoConsent.PUBLIC)
GROUP_ORDER = {GroupKind.SCHOOL: 0, GroupKind.CLASS: 1, GroupKind.COMMITTEE: 2}


def mail_language(locale: str | None, school_locale: str) -> str:
    """The catalogue for a BCP 47 tag: its language if we have it, else the school's, else Dutch."""
    for tag in (locale, school_locale):
        language = (tag or "").replace("_", "-").split("-")[0].lower()
        if language in LANGUAGES:
            return language
    return "nl"


def may_mail(media: Media) -> bool:
    """DESIGN's rule: an image goes into a mail only if every child in it allows mail."""
    return all(child.photo_consent in MAIL_CONSENT for child in media.children)


def load_posts(session: Session, post_ids: Iterable[str]) -> list[Post]:
    """The posts that still exist and are not deleted, with what rendering needs, in few queries."""
    ids = list(post_ids)
    if not ids:
        return []
    return list(
        session.scalars(
            select(Post)
            .where(Post.id.in_(ids), Post.deleted_at.is_(None))
            .options(
                selectinload(Post.media).selectinload(Media.children),
                selectinload(Post.event),
            )
            .order_by(Post.published_at, Post.id)
        )
    )


@dataclass(frozen=True)
class _MediaShot:
    """A photo or video of a post as the mail's rule sees it, consent already decided."""

    id: str
    is_video: bool
    still: str | None  # the image, or the video's poster
    alt: str | None
    mailable: bool  # every child in it allows mail


@dataclass(frozen=True)
class _PostShot:
    """What a mail shows of a post, read from its rows: plain, hashable values.

    Two equal shots give the same PostContent, so a post is built (HTML cleaned, links signed)
    once for every batch that carries it until its row or a child's consent changes. The JSON
    columns are kept as canonical JSON text, so the shot can be hashed.
    """

    id: str
    group_id: str
    kind: PostKind
    title: str
    author: str
    published_at: datetime | None
    body_html: str
    url: str | None
    links: str
    meeting: str
    help: str
    media: tuple[_MediaShot, ...]
    event: tuple[datetime, datetime | None, str | None] | None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _shot(
    post: Any,
    media: tuple[_MediaShot, ...],
    event: tuple[datetime, datetime | None, str | None] | None,
) -> _PostShot:
    """A post's shot from a Post or a row with the same names, its media and its event."""
    return _PostShot(
        id=post.id,
        group_id=post.group_id,
        kind=post.kind,
        title=post.title,
        author=post.author,
        published_at=post.published_at,
        body_html=post.body_html,
        url=post.url,
        links=_json(post.links or []),
        meeting=_json(post.meeting),
        help=_json(post.help),
        media=media,
        event=event,
    )


def _media_shot(media: Any, mailable: bool) -> _MediaShot:
    """A Media, or a row with the same names, as a shot."""
    return _MediaShot(
        id=media.id,
        is_video=media.type is MediaType.VIDEO,
        still=media.url if media.type is MediaType.IMAGE else media.poster_url,
        alt=media.alt,
        mailable=mailable,
    )


def load_shots(session: Session, post_ids: Iterable[str]) -> list[_PostShot]:
    """The posts that still exist and are not deleted, in mail order, in four plain queries.

    Consent is read here, at render time, for every child in every photo.
    """
    ids = list(post_ids)
    if not ids:
        return []
    media: dict[str, list[_MediaShot]] = {}
    consents: dict[str, bool] = {}
    for media_id, consent in session.execute(
        select(media_children.c.media_id, Child.photo_consent)
        .join(Child, Child.id == media_children.c.child_id)
        .join(Media, Media.id == media_children.c.media_id)
        .where(Media.post_id.in_(ids))
    ):
        consents[media_id] = consents.get(media_id, True) and consent in MAIL_CONSENT
    for row in session.execute(
        select(Media.id, Media.post_id, Media.type, Media.url, Media.poster_url, Media.alt)
        .where(Media.post_id.in_(ids))
        .order_by(Media.post_id, Media.position, Media.id)
    ):
        mailable = consents.get(row.id, True)  # no child in it: nobody to refuse
        media.setdefault(row.post_id, []).append(_media_shot(row, mailable))
    events = {
        post_id: (starts_at, ends_at, location)
        for post_id, starts_at, ends_at, location in session.execute(
            select(Event.post_id, Event.starts_at, Event.ends_at, Event.location).where(
                Event.post_id.in_(ids)
            )
        )
    }
    rows = session.execute(
        select(
            Post.id,
            Post.group_id,
            Post.kind,
            Post.title,
            Post.author,
            Post.published_at,
            Post.body_html,
            Post.url,
            Post.links,
            Post.meeting,
            Post.help,
        )
        .where(Post.id.in_(ids), Post.deleted_at.is_(None))
        .order_by(Post.published_at, Post.id)
    )
    return [_shot(row, tuple(media.get(row.id, ())), events.get(row.id)) for row in rows]


def post_content(post: Post, links: Links) -> PostContent:
    """One post as a mail shows it: only the photos consent allows, signed links, clean HTML."""
    media = tuple(_media_shot(item, may_mail(item)) for item in post.media)
    event = post.event
    when = (event.starts_at, event.ends_at, event.location) if event is not None else None
    return built_post(_shot(post, media, when), links)


def built_post(shot: _PostShot, links: Links) -> PostContent:
    """The PostContent of a shot; the same object for equal shots on the same (UTC) day."""
    return _built(shot, links, datetime.now(UTC).date())


# A post goes into every mail of its groups, batch after batch: built once while its rows and
# its children's consent stay the same. Keyed by the day too, so the timed links it carries
# (photos, album, calendar) are never more than a day older than the mail.
@functools.lru_cache(maxsize=1024)
def _built(shot: _PostShot, links: Links, day: date) -> PostContent:
    photos: list[Photo] = []
    withheld = 0
    for media in shot.media:
        if not media.still or not media.mailable:
            withheld += 1
            continue
        photos.append(
            Photo(
                url=links.media(media.id),
                # Without the portal's alt the template writes one in the mail's language.
                alt=media.alt or "",
                is_video=media.is_video,
                link=shot.url if media.is_video else None,
            )
        )
    event = None
    if shot.event is not None:
        # No changed_at: the store keeps no time of an edit (see digest.calendar on SEQUENCE).
        starts_at, ends_at, location = shot.event
        event = EventInfo(starts_at, ends_at, location, ics_url=links.event(shot.id))
    signup = None
    meeting, help_ = json.loads(shot.meeting), json.loads(shot.help)
    if meeting:
        signup = SignupInfo(
            signup_url=meeting.get("signup_url"),
            deadline=_instant(meeting.get("deadline")),
        )
    elif help_:
        signup = SignupInfo(
            signup_url=help_.get("signup_url"),
            needed_at=_instant(help_.get("needed_at")),
            what=help_.get("what"),
        )
    assert shot.published_at is not None
    return PostContent(
        id=shot.id,
        kind=shot.kind.value,
        title=shot.title,
        author=shot.author,
        published_at=shot.published_at,
        body_html=clean_teacher_html(shot.body_html),
        url=shot.url,
        photos=tuple(photos),
        withheld_photos=withheld,
        event=event,
        links=tuple(
            LinkInfo(url=link["url"], title=link.get("title") or "")
            for link in json.loads(shot.links)
        ),
        signup=signup,
        gallery_url=links.gallery(shot.id) if len(photos) > MAX_THUMBNAILS else None,
    )


def _instant(text: str | None) -> datetime | None:
    # Stored as the portal sent it (ISO 8601 with an offset, checked on import).
    return datetime.fromisoformat(text) if text else None


def compose(
    session: Session,
    links: Links,
    *,
    school: School,
    post_ids: Sequence[str],
    guardian_ids: Sequence[str],
    names: Sequence[str],
    address: str,
    locale: str,
    period: tuple[datetime, datetime] | None = None,
    kind: str = "newsletter",
) -> MailContent:
    """The content of one mail to ``address``; posts deleted since planning are left out."""
    posts = load_shots(session, post_ids)
    return _assemble(
        links,
        school=school,
        posts=posts,
        groups=_groups_of(session, posts),
        contents={post.id: built_post(post, links) for post in posts},
        guardian_ids=guardian_ids,
        names=names,
        address=address,
        locale=locale,
        period=period,
        kind=kind,
    )


def _groups_of(session: Session, posts: Iterable[_PostShot]) -> dict[str, Group]:
    ids = {post.group_id for post in posts}
    return {g.id: g for g in session.scalars(select(Group).where(Group.id.in_(ids)))}


def _assemble(
    links: Links,
    *,
    school: School,
    posts: Sequence[_PostShot],
    groups: dict[str, Group],
    contents: dict[str, PostContent],
    guardian_ids: Sequence[str],
    names: Sequence[str],
    address: str,
    locale: str,
    period: tuple[datetime, datetime] | None,
    kind: str,
) -> MailContent:
    """One mail of ``posts`` (in order), their groups and their already built contents."""
    present = {post.group_id for post in posts}
    ordered = sorted(
        (groups[group_id] for group_id in present),
        key=lambda g: (GROUP_ORDER[g.kind], g.name.lower(), g.id),
    )
    sections = tuple(
        GroupSection(
            id=group.id,
            name=group.name,
            kind=group.kind.value,
            posts=tuple(contents[p.id] for p in posts if p.group_id == group.id),
        )
        for group in ordered
    )
    period_start, cutoff = period if period else (None, None)
    return MailContent(
        school=SchoolInfo(
            id=school.id,
            name=school.name,
            timezone=school.timezone,
            reply_to=school.reply_to,
            portal_url=school.portal_url,
        ),
        locale=mail_language(locale, school.locale),
        recipient_names=tuple(names),
        address=address,
        sections=sections,
        period_start=period_start,
        cutoff=cutoff,
        week=iso_week(cutoff, school.timezone) if cutoff else None,
        preferences_url=links.preferences(list(guardian_ids)) if guardian_ids else None,
        unsubscribe_url=links.unsubscribe(list(guardian_ids)) if guardian_ids else None,
        kind=kind,
    )


def compose_delivery(session: Session, links: Links, delivery: Delivery) -> MailContent:
    """The content of one outbox row, for the guardians who share its address."""
    school = session.get_one(School, delivery.school_id)
    if delivery.kind is DeliveryKind.NEWSLETTER:
        who = (
            select(Guardian.id, Guardian.name)
            .join(Recipient, Recipient.guardian_id == Guardian.id)
            .where(Recipient.delivery_id == delivery.id)
        )
    else:  # a per-post mail: the school's guardians at that address
        who = select(Guardian.id, Guardian.name).where(
            Guardian.school_id == delivery.school_id,
            func.lower(Guardian.email) == delivery.address,
        )
    sharing = session.execute(who.order_by(Guardian.name, Guardian.id)).all()
    edition = session.get(Edition, delivery.edition_id) if delivery.edition_id else None
    return compose(
        session,
        links,
        school=school,
        post_ids=delivery.post_ids,
        guardian_ids=[g.id for g in sharing],
        names=[g.name for g in sharing],
        address=delivery.address,
        locale=delivery.locale,
        period=(edition.period_start, edition.cutoff) if edition else None,
        kind=delivery.kind.value,
    )


def compose_batch(
    session: Session, links: Links, deliveries: Sequence[Delivery]
) -> dict[int, MailContent]:
    """The content of many outbox rows by id, as ``compose_delivery`` gives it, in few queries.

    The newsletters' schools, editions, names, posts and groups are loaded once for the batch,
    and each post is built (consent, links, clean HTML) once, however many mails carry it.
    """
    contents = {
        delivery.id: compose_delivery(session, links, delivery)
        for delivery in deliveries
        if delivery.kind is not DeliveryKind.NEWSLETTER
    }
    newsletters = [d for d in deliveries if d.kind is DeliveryKind.NEWSLETTER]
    if not newsletters:
        return contents
    schools = {
        school.id: school
        for school in session.scalars(
            select(School).where(School.id.in_({d.school_id for d in newsletters}))
        )
    }
    edition_ids = {d.edition_id for d in newsletters if d.edition_id is not None}
    editions = {
        edition.id: edition
        for edition in session.scalars(select(Edition).where(Edition.id.in_(edition_ids)))
    }
    sharing: dict[int | None, list[tuple[str, str]]] = {d.id: [] for d in newsletters}
    for delivery_id, guardian_id, name in session.execute(
        select(Recipient.delivery_id, Guardian.id, Guardian.name)
        .join(Recipient, Recipient.guardian_id == Guardian.id)
        .where(Recipient.delivery_id.in_(list(sharing)))
        .order_by(Guardian.name, Guardian.id)
    ):
        sharing[delivery_id].append((guardian_id, name))
    posts = load_shots(session, {post_id for d in newsletters for post_id in d.post_ids})
    groups = _groups_of(session, posts)
    built = {post.id: built_post(post, links) for post in posts}
    for delivery in newsletters:
        wanted = set(delivery.post_ids)
        edition = editions.get(delivery.edition_id) if delivery.edition_id else None
        who = sharing[delivery.id]
        contents[delivery.id] = _assemble(
            links,
            school=schools[delivery.school_id],
            posts=[post for post in posts if post.id in wanted],
            groups=groups,
            contents=built,
            guardian_ids=[guardian_id for guardian_id, _ in who],
            names=[name for _, name in who],
            address=delivery.address,
            locale=delivery.locale,
            period=(edition.period_start, edition.cutoff) if edition else None,
            kind=delivery.kind.value,
        )
    return contents
