"""What a mail says, as plain data: built from the store, consumed by the renderer.

Everything a template needs is here, already decided: which photos may be shown (consent is
checked when this is built, which is render time), the sanitised teacher HTML, the school's zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

MAX_THUMBNAILS = 6  # two rows of three: enough to see what happened, small enough to load


@dataclass(frozen=True)
class Photo:
    """An image (or a video's still) that consent allows in a mail."""

    url: str  # the service's own signed link, never the portal's
    alt: str  # the portal's; empty when it gave none (the template says "Photo from Groep 5")
    is_video: bool = False
    link: str | None = None  # where a click goes (a video plays in the portal)


@dataclass(frozen=True)
class EventInfo:
    """When and where; the calendar entry takes its title and text from the post."""

    starts_at: datetime
    ends_at: datetime | None
    location: str | None
    ics_url: str | None = None  # the signed "add to calendar" link (/ics/<token>.ics)
    # When the teacher last changed the event; None while the store keeps no such time, and
    # then the entry's SEQUENCE follows the render time (see digest.calendar).
    changed_at: datetime | None = None


@dataclass(frozen=True)
class LinkInfo:
    url: str
    title: str


@dataclass(frozen=True)
class SignupInfo:
    """A parent-meeting sign-up (``meeting``) or a call for volunteers (``help``)."""

    signup_url: str | None
    deadline: datetime | None = None
    needed_at: datetime | None = None
    what: str | None = None


@dataclass(frozen=True)
class PostContent:
    id: str
    kind: str
    title: str
    author: str
    published_at: datetime
    body_html: str  # sanitised with the allowlist; safe to mark as markup
    url: str | None
    photos: tuple[Photo, ...] = ()
    withheld_photos: int = 0  # images kept out of the mail for want of consent
    event: EventInfo | None = None
    links: tuple[LinkInfo, ...] = ()
    signup: SignupInfo | None = None
    # The service's page with every photo consent allows; set when the mail shows only the first
    # MAX_THUMBNAILS of them.
    gallery_url: str | None = None

    def __hash__(self) -> int:
        # Every cache of the renderer is keyed by post, and a post goes into many mails: its
        # fields (photos, body) are hashed once. Kept out of pickles: hashes differ by process.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, object]:
        return {key: value for key, value in self.__dict__.items() if key != "_hash"}


@dataclass(frozen=True)
class GroupSection:
    id: str
    name: str
    kind: str
    posts: tuple[PostContent, ...]
    continued: bool = False  # the group's earlier posts are in the previous part of the mail


@dataclass(frozen=True)
class SchoolInfo:
    id: str
    name: str
    timezone: str
    reply_to: str | None
    portal_url: str | None


@dataclass(frozen=True)
class MailContent:
    """One mail: a newsletter (several groups) or a single post (one group, one post)."""

    school: SchoolInfo
    locale: str  # a locale with a catalogue ("nl" or "en")
    recipient_names: tuple[str, ...]
    address: str
    sections: tuple[GroupSection, ...]
    period_start: datetime | None = None
    cutoff: datetime | None = None
    week: int | None = None
    preferences_url: str | None = None
    unsubscribe_url: str | None = None
    kind: str = "newsletter"  # or "post"
    extra_headers: dict[str, str] = field(default_factory=dict)
    # A week too large for one mail goes out as numbered parts: "deel 1 van 2".
    part: int | None = None
    parts: int | None = None

    @property
    def post_count(self) -> int:
        return sum(len(section.posts) for section in self.sections)

    @property
    def withheld_photos(self) -> int:
        return sum(post.withheld_photos for section in self.sections for post in section.posts)
