"""Calendar entries for the events in a mail: one ``.ics`` attachment, and one file per event.

The attachment and the per-event link ("add to calendar") are built by the same code, so they
hold the same entry: adding it again, from a later mail or from the link, updates the entry in
the parent's calendar instead of adding a second one.

Decisions, in one place:

- UID ``post-<post id>@<mail domain>``: a post has at most one event, and the UID stays the
  same in every mail and link, before and after the teacher edits the event.
- SEQUENCE counts minutes since 2020-01-01 UTC (well inside iCalendar's 32-bit INTEGER) of the
  newest thing we know about the event: ``EventInfo.changed_at`` when the store gives it, else
  the moment the calendar is made. The store keeps no time of a teacher's edit
  (``posts.ingested_at`` is set once, on first import), and an edit reaches a parent only in a
  later mail or a later click on the link, so a later calendar always carries a higher SEQUENCE
  and replaces the entry, while an old mail opened late carries a lower one and is ignored.
- Times are written in the school's zone (``DTSTART;TZID=Europe/Amsterdam``), with a VTIMEZONE
  generated from the zone database for the calendar years of the events.
- An event without an end lasts an hour. One that starts at midnight in the school's zone and
  has no end, or ends at a later midnight, is an all-day event (date-only DTSTART/DTEND): that
  is how a portal gives a day without hours.
- A post's text goes into DESCRIPTION as plain text, cut at ``DESCRIPTION_LIMIT`` characters,
  followed by its links and the post's portal address.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress

from digest.content import EventInfo, MailContent, PostContent, SchoolInfo
from digest.sanitize import teacher_html_to_text
from digest.settings import Settings

PRODID = "-//digest//School newsletter//NL"
SEQUENCE_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
DEFAULT_DURATION = timedelta(hours=1)
DESCRIPTION_LIMIT = 2000  # the mail and the portal hold the whole post; an entry needs the gist
ATTACHMENT_NAMES = {"nl": "agenda.ics", "en": "events.ics"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_URL_UNSAFE = re.compile(r"[\s<>\"\x00-\x1f\x7f]")


def event_uid(post_id: str, domain: str) -> str:
    """The entry's UID: one per post, the same in every mail and every link."""
    return f"post-{post_id}@{domain}"


def event_sequence(event: EventInfo, now: datetime) -> int:
    """The entry's SEQUENCE: minutes since 2020 of the event's last change, else of ``now``."""
    moment = event.changed_at or now
    return max(0, int((moment - SEQUENCE_EPOCH).total_seconds() // 60))


def attachment_name(locale: str) -> str:
    """The attachment's file name in the mail's language."""
    return ATTACHMENT_NAMES.get(locale, ATTACHMENT_NAMES["en"])


def mail_calendar(content: MailContent, settings: Settings, *, now: datetime) -> bytes | None:
    """Every event of a mail as one calendar (METHOD:PUBLISH); None when the mail has none."""
    posts = [post for section in content.sections for post in section.posts if post.event]
    if not posts:
        return None
    return _calendar(posts, content.school, settings, now)


def event_calendar(
    post: PostContent, school: SchoolInfo, settings: Settings, *, now: datetime
) -> bytes:
    """One post's event as a calendar, for the ``/ics/<token>.ics`` link: the mail's entry."""
    if post.event is None:
        raise ValueError(f"post {post.id} has no event")
    return _calendar([post], school, settings, now)


def _calendar(
    posts: Sequence[PostContent], school: SchoolInfo, settings: Settings, now: datetime
) -> bytes:
    # A calendar is its properties, then its components, each already in wire form: the
    # VTIMEZONE and every event are built once (the same for every parent whose mail holds
    # them) and joined, instead of building the whole calendar per combination of events.
    entries = [
        _entry_ical(post, school, settings.mail_domain, settings.mail_from, now) for post in posts
    ]
    # The VTIMEZONE covers whole years, so both of each year's DST changes are in it.
    first = min(entry.first_year for entry in entries)
    last = max(entry.last_year for entry in entries)
    timezone = _timezone_ical(school.timezone, first, last)
    return b"".join((_CALENDAR_HEAD, timezone, *(e.ical for e in entries), _CALENDAR_END))


def _calendar_parts() -> tuple[bytes, bytes]:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    ics: bytes = calendar.to_ical()  # folded at 75 octets, CRLF line ends
    end = b"END:VCALENDAR\r\n"
    assert ics.endswith(end)
    return ics[: -len(end)], end


_CALENDAR_HEAD, _CALENDAR_END = _calendar_parts()


@dataclass(frozen=True)
class _EntryIcal:
    ical: bytes
    first_year: int
    last_year: int


@functools.lru_cache(maxsize=1024)
def _entry_ical(
    post: PostContent, school: SchoolInfo, mail_domain: str, mail_from: str, now: datetime
) -> _EntryIcal:
    entry = _entry(post, school, mail_domain, mail_from, ZoneInfo(school.timezone), now)
    years = [entry.decoded(name).year for name in ("dtstart", "dtend")]
    return _EntryIcal(entry.to_ical(), min(years), max(years))


@functools.lru_cache(maxsize=64)
def _timezone_ical(zone: str, first_year: int, last_year: int) -> bytes:
    timezone = Timezone.from_tzinfo(
        ZoneInfo(zone),
        tzid=zone,
        first_date=date(first_year, 1, 1),
        last_date=date(last_year + 1, 1, 1),
    )
    ics: bytes = timezone.to_ical()
    return ics


def _entry(
    post: PostContent,
    school: SchoolInfo,
    mail_domain: str,
    mail_from: str,
    tz: tzinfo,
    now: datetime,
) -> Event:
    event = post.event
    assert event is not None
    entry = Event()
    entry.add("uid", event_uid(post.id, mail_domain))
    entry.add("dtstamp", now.astimezone(UTC))
    entry.add("sequence", event_sequence(event, now))
    if event.changed_at is not None:
        entry.add("last-modified", event.changed_at.astimezone(UTC))
    start, end = _span(event, tz)
    entry.add("dtstart", start)
    entry.add("dtend", end)
    entry.add("summary", _line(post.title))
    if event.location and _line(event.location):
        entry.add("location", _line(event.location))
    entry.add("description", _description(post))
    url = _web_url(post.url)
    if url:
        entry.add("url", url)
    organizer = vCalAddress(f"mailto:{school.reply_to or mail_from}")
    organizer.params["cn"] = _line(school.name)
    entry.add("organizer", organizer)
    return entry


def _span(event: EventInfo, tz: tzinfo) -> tuple[date, date] | tuple[datetime, datetime]:
    start = _local(event.starts_at, tz)
    end = _local(event.ends_at, tz) if event.ends_at else None
    if end is not None and end <= start:
        end = None  # a zero-length event says no more than its start
    if _is_midnight(start) and (end is None or _is_midnight(end)):
        first_day = start.date()
        return first_day, end.date() if end else first_day + timedelta(days=1)
    return start, end or start + DEFAULT_DURATION


def _local(moment: datetime, tz: tzinfo) -> datetime:
    # A naive time is read in the school's zone, as everywhere else in the service.
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)


def _is_midnight(moment: datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def _description(post: PostContent) -> str:
    references: list[str] = []
    text = _paragraphs(teacher_html_to_text(post.body_html, references))
    if len(text) > DESCRIPTION_LIMIT:
        text = text[:DESCRIPTION_LIMIT].rsplit(maxsplit=1)[0] + " …"
    # The references come from sanitised HTML: https and mailto only.
    notes = [f"[{n}] {_line(url)}" for n, url in enumerate(references, start=1)]
    portal = _web_url(post.url)
    return "\n\n".join(part for part in (text, "\n".join(notes), portal) if part)


def _line(text: str) -> str:
    """One line: control characters (CR, LF, …) become spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _paragraphs(text: str) -> str:
    """Lines kept, any other control character gone."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(_CONTROL_BUT_NEWLINE.sub(" ", line).rstrip() for line in lines).strip()


def _web_url(url: str | None) -> str | None:
    """An http(s) URL fit for a URI property; anything else is left out."""
    if not url or _URL_UNSAFE.search(url.strip()):
        return None
    url = url.strip()
    return url if url.lower().startswith(("https://", "http://")) else None
