"""Calendar entries: the .ics attachment of a mail with events, and the per-event link."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from icalendar.cal import Component
from sqlalchemy.orm import Session, sessionmaker

from digest.calendar import event_calendar, event_uid, mail_calendar
from digest.compose import compose
from digest.content import EventInfo, GroupSection, MailContent, PostContent, SchoolInfo
from digest.ingest import import_document
from digest.links import Links
from digest.models import School
from digest.render import RenderedMail, Renderer
from digest.settings import Settings

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)
ICS = "https://digest.schakel.example/ics/tok-m1.ics"
SETTINGS = Settings(
    mail_from="nieuwsbrief@schakel.example",
    message_id_domain="schakel.example",
    base_url="https://digest.schakel.example",
)
SCHOOL = SchoolInfo(
    id="s1",
    name="De Schakel",
    timezone="Europe/Amsterdam",
    reply_to="info@schakel.example",
    portal_url="https://portal.example",
)
FAIR = EventInfo(
    datetime(2026, 11, 27, 14, 0, tzinfo=AMS),
    datetime(2026, 11, 27, 15, 30, tzinfo=AMS),
    "Gymzaal",
    ics_url=ICS,
)


def make_post(id: str = "m1", **fields: Any) -> PostContent:
    values: dict[str, Any] = {
        "id": id,
        "kind": "event",
        "title": "Kerstmarkt",
        "author": "Juf Anne",
        "published_at": datetime(2026, 11, 24, 10, 15, tzinfo=AMS),
        "body_html": '<p>Kom naar de <a href="https://school.example/markt">markt</a>.</p>',
        "url": f"https://portal.example/posts/{id}",
        "event": FAIR,
        **fields,
    }
    return PostContent(**values)


def make_content(*posts: PostContent, **fields: Any) -> MailContent:
    values: dict[str, Any] = {
        "school": SCHOOL,
        "locale": "nl",
        "recipient_names": ("Fatma Yilmaz",),
        "address": "f.yilmaz@example.org",
        "sections": (GroupSection("g5", "Groep 5", "class", posts or (make_post(),)),),
        "week": 48,
        "unsubscribe_url": "https://digest.schakel.example/u/tok",
        **fields,
    }
    return MailContent(**values)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def parse_back(rendered: RenderedMail) -> EmailMessage:
    parsed = email.message_from_bytes(rendered.message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def calendar_part(message: EmailMessage) -> EmailMessage:
    parts = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    return parts[0]


def attachment(renderer: Renderer, content: MailContent, now: datetime = NOW) -> Calendar:
    """The mail's .ics, read back from the bytes a parent's mail program would get."""
    part = calendar_part(parse_back(renderer.render(content, now=now)))
    return Calendar.from_ical(part.get_payload(decode=True))


def entry(calendar: Calendar, post_id: str = "m1") -> Component:
    uid = event_uid(post_id, "schakel.example")
    found = [e for e in calendar.walk("VEVENT") if str(e["UID"]) == uid]
    assert len(found) == 1, [str(e["UID"]) for e in calendar.walk("VEVENT")]
    return found[0]


# --- the attachment ---------------------------------------------------------------------------


def test_attachment_holds_every_event_in_the_schools_zone(renderer: Renderer) -> None:
    summer = EventInfo(datetime(2027, 6, 18, 10, 0, tzinfo=AMS), None, "Sportpark")
    content = make_content(
        make_post(),
        make_post("m2", title="Sportdag", event=summer),
        make_post("m3", title="Geen afspraak", event=None),
    )
    calendar = attachment(renderer, content)

    assert str(calendar["VERSION"]) == "2.0"
    assert str(calendar["METHOD"]) == "PUBLISH"
    assert str(calendar["CALSCALE"]) == "GREGORIAN"
    assert str(calendar["PRODID"])
    assert len(calendar.walk("VEVENT")) == 2  # the post without event has no entry

    fair = entry(calendar)
    assert fair["DTSTART"].params["TZID"] == "Europe/Amsterdam"
    assert fair["DTEND"].params["TZID"] == "Europe/Amsterdam"
    assert fair.decoded("DTSTART") == datetime(2026, 11, 27, 14, 0, tzinfo=AMS)
    assert fair.decoded("DTSTART").astimezone(UTC).hour == 13
    assert fair.decoded("DTEND") == datetime(2026, 11, 27, 15, 30, tzinfo=AMS)
    assert fair.decoded("DTSTAMP") == NOW.astimezone(UTC)
    assert str(fair["SUMMARY"]) == "Kerstmarkt"
    assert str(fair["LOCATION"]) == "Gymzaal"
    assert str(fair["URL"]) == "https://portal.example/posts/m1"
    assert str(fair["DESCRIPTION"]) == (
        "Kom naar de markt [1].\n\n[1] https://school.example/markt\n\n"
        "https://portal.example/posts/m1"
    )
    assert str(fair["ORGANIZER"]) == "mailto:info@schakel.example"
    assert fair["ORGANIZER"].params["CN"] == "De Schakel"

    # The event without an end lasts an hour, in summer time.
    sports = entry(calendar, "m2")
    assert sports.decoded("DTEND") - sports.decoded("DTSTART") == timedelta(hours=1)
    assert sports.decoded("DTSTART").utcoffset() == timedelta(hours=2)


def test_one_vtimezone_with_the_dst_rules_of_the_schools_zone(renderer: Renderer) -> None:
    summer = EventInfo(datetime(2027, 6, 18, 10, 0, tzinfo=AMS), None, None)
    calendar = attachment(renderer, make_content(make_post(), make_post("m2", event=summer)))
    (zone,) = calendar.walk("VTIMEZONE")
    assert str(zone["TZID"]) == "Europe/Amsterdam"
    offsets = {
        (sub.name, sub.decoded("TZOFFSETFROM"), sub.decoded("TZOFFSETTO"))
        for sub in zone.subcomponents
    }
    hour, two = timedelta(hours=1), timedelta(hours=2)
    assert {("DAYLIGHT", hour, two), ("STANDARD", two, hour)} <= offsets
    # The rules as written, not the zone database of whoever reads them back: both years'
    # changes are there (last Sunday of March and of October).
    tz = zone.to_tz()
    for moment, offset in [
        (datetime(2026, 11, 27, 14, 0), hour),
        (datetime(2027, 3, 28, 1, 30), hour),
        (datetime(2027, 3, 28, 3, 30), two),
        (datetime(2027, 6, 18, 10, 0), two),
        (datetime(2027, 10, 31, 3, 30), hour),
    ]:
        assert moment.replace(tzinfo=tz).utcoffset() == offset, moment


def test_a_mail_without_events_has_no_attachment(renderer: Renderer) -> None:
    content = make_content(make_post(event=None))
    assert mail_calendar(content, SETTINGS, now=NOW) is None
    parsed = parse_back(renderer.render(content, now=NOW))
    assert parsed.get_content_type() == "multipart/alternative"
    assert not list(parsed.iter_attachments())
    assert "text/calendar" not in [p.get_content_type() for p in parsed.walk()]


def test_the_message_parses_into_text_html_and_the_calendar(renderer: Renderer) -> None:
    rendered = renderer.render(make_content(), now=NOW)
    parsed = parse_back(rendered)
    assert parsed.get_content_type() == "multipart/mixed"
    assert parsed["Content-Language"] == "nl"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == rendered.html
    part = calendar_part(parsed)
    assert part.get_content_disposition() == "attachment"
    assert part.get_filename() == "agenda.ics"
    assert part.get_param("method") == "PUBLISH"
    assert part.get_content_charset() == "utf-8"
    assert part.get("MIME-Version") is None  # only the message says it
    raw = part.get_payload(decode=True)
    assert raw.startswith(b"BEGIN:VCALENDAR\r\n") and raw.endswith(b"END:VCALENDAR\r\n")
    # Each part is in the order a mail program expects: body first, attachment last.
    kinds = [p.get_content_type() for p in parsed.walk() if not p.is_multipart()]
    assert kinds == ["text/plain", "text/html", "text/calendar"]

    english = parse_back(renderer.render(make_content(locale="en"), now=NOW))
    assert english["Content-Language"] == "en"
    assert calendar_part(english).get_filename() == "events.ics"


def test_a_per_post_mail_carries_its_event_too(renderer: Renderer) -> None:
    calendar = attachment(renderer, make_content(kind="post"))
    assert [str(e["SUMMARY"]) for e in calendar.walk("VEVENT")] == ["Kerstmarkt"]


# --- one entry per post, updated in place ----------------------------------------------------


def test_the_same_post_keeps_its_uid_and_an_edit_raises_the_sequence(renderer: Renderer) -> None:
    first = entry(attachment(renderer, make_content()))
    again = entry(attachment(renderer, make_content()))
    assert str(first["UID"]) == str(again["UID"]) == "post-m1@schakel.example"
    assert first["SEQUENCE"] == again["SEQUENCE"]  # the same mail twice is the same entry

    # The teacher moves the fair an hour; next week's mail carries the change.
    moved = replace(
        FAIR,
        starts_at=datetime(2026, 11, 27, 15, 0, tzinfo=AMS),
        ends_at=datetime(2026, 11, 27, 16, 30, tzinfo=AMS),
    )
    later = NOW + timedelta(days=7)
    edited = entry(attachment(renderer, make_content(make_post(event=moved)), later))
    assert str(edited["UID"]) == str(first["UID"])
    assert edited["SEQUENCE"] > first["SEQUENCE"]
    assert edited.decoded("DTSTART") == datetime(2026, 11, 27, 15, 0, tzinfo=AMS)


def test_a_known_change_time_sets_the_sequence(renderer: Renderer) -> None:
    changed = replace(FAIR, changed_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    edited = replace(changed, changed_at=datetime(2026, 11, 21, 9, 0, tzinfo=UTC))
    before = entry(attachment(renderer, make_content(make_post(event=changed))))
    after = entry(attachment(renderer, make_content(make_post(event=edited))))
    assert after["SEQUENCE"] - before["SEQUENCE"] == 24 * 60  # minutes
    assert after.decoded("LAST-MODIFIED") == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    # Rendered later without an edit, the entry stays the same revision.
    again = entry(attachment(renderer, make_content(make_post(event=edited)), NOW + timedelta(1)))
    assert again["SEQUENCE"] == after["SEQUENCE"]


def test_the_per_event_file_is_the_mails_entry(renderer: Renderer) -> None:
    post = make_post()
    mail = entry(attachment(renderer, make_content(post)))
    alone = Calendar.from_ical(event_calendar(post, SCHOOL, SETTINGS, now=NOW))
    assert str(alone["METHOD"]) == "PUBLISH"
    assert len(alone.walk("VTIMEZONE")) == 1
    single = entry(alone)
    for name in ("UID", "SEQUENCE", "DTSTART", "DTEND", "SUMMARY", "LOCATION", "DESCRIPTION"):
        assert single.decoded(name) == mail.decoded(name), name
    with pytest.raises(ValueError):
        event_calendar(make_post(event=None), SCHOOL, SETTINGS, now=NOW)


# --- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("starts", "ends", "expected"),
    [
        # Midnight without an end: the whole day.
        (datetime(2026, 12, 3, 0, 0, tzinfo=AMS), None, (date(2026, 12, 3), date(2026, 12, 4))),
        # Midnight to midnight: whole days (a two-day camp ends on the third morning).
        (
            datetime(2027, 5, 19, 0, 0, tzinfo=AMS),
            datetime(2027, 5, 21, 0, 0, tzinfo=AMS),
            (date(2027, 5, 19), date(2027, 5, 21)),
        ),
        # Given in UTC, read in the school's zone: 23:00 UTC is midnight in Amsterdam.
        (datetime(2026, 12, 2, 23, 0, tzinfo=UTC), None, (date(2026, 12, 3), date(2026, 12, 4))),
        # Zero length: an hour from the start.
        (
            datetime(2026, 12, 3, 8, 30, tzinfo=AMS),
            datetime(2026, 12, 3, 8, 30, tzinfo=AMS),
            (
                datetime(2026, 12, 3, 8, 30, tzinfo=AMS),
                datetime(2026, 12, 3, 9, 30, tzinfo=AMS),
            ),
        ),
    ],
)
def test_start_and_end(
    renderer: Renderer,
    starts: datetime,
    ends: datetime | None,
    expected: tuple[date, date],
) -> None:
    post = make_post(event=EventInfo(starts, ends, None))
    found = entry(attachment(renderer, make_content(post)))
    assert (found.decoded("DTSTART"), found.decoded("DTEND")) == expected
    assert "LOCATION" not in found


# --- the link ---------------------------------------------------------------------------------


def test_the_per_event_link_is_in_the_html_and_the_text(renderer: Renderer) -> None:
    rendered = renderer.render(make_content(), now=NOW)
    assert f'<a href="{ICS}"' in rendered.html
    assert "Zet in uw agenda</a>" in rendered.html
    # In the text part the link is a numbered reference after "when" and "where".
    assert "Waar: Gymzaal\nZet in uw agenda [2]\n" in rendered.text
    assert f"[2] {ICS}\n" in rendered.text
    english = renderer.render(make_content(locale="en"), now=NOW)
    assert "Add to calendar</a>" in english.html and "Add to calendar [2]" in english.text


def test_no_link_without_a_signed_url(renderer: Renderer) -> None:
    post = make_post(event=replace(FAIR, ics_url=None))
    rendered = renderer.render(make_content(post), now=NOW)
    assert "Zet in uw agenda" not in rendered.html and "Zet in uw agenda" not in rendered.text
    assert "/ics/" not in rendered.text


# --- hostile input ----------------------------------------------------------------------------


def test_hostile_strings_stay_inside_their_properties(renderer: Renderer) -> None:
    breakout = "\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil@example\r\nSUMMARY:Gratis"
    arabic = "حفل نهاية السنة"
    title = f"Feest 🎉 {arabic}{breakout}"
    long_body = "<p>" + ("Lange zin met 🎄 en العربية, ; \\ en meer. " * 400) + "</p>"
    post = make_post(
        title=title,
        body_html=long_body,
        url="javascript:alert(1)",
        event=replace(FAIR, location=f"Zaal 1{breakout}\u2028{arabic}"),
    )
    school = replace(SCHOOL, name='De "Schakel"\r\nBcc: x@evil.example')
    content = make_content(post, school=school)
    part = calendar_part(parse_back(renderer.render(content, now=NOW)))
    raw = part.get_payload(decode=True)

    text = raw.decode("utf-8")  # folding never splits a character
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 75 for line in lines)  # RFC 5545 folds at 75 octets
    assert lines.count(b"BEGIN:VEVENT") == lines.count(b"END:VEVENT") == 1
    assert not any(line.startswith(b"UID:evil") for line in lines)
    assert "🎉" in text and arabic in text

    calendar = Calendar.from_ical(raw)
    (found,) = calendar.walk("VEVENT")
    assert str(found["UID"]) == "post-m1@schakel.example"
    summary = str(found["SUMMARY"])
    assert summary.startswith(f"Feest 🎉 {arabic}") and "END:VEVENT" in summary
    assert "\n" not in summary and "\r" not in summary
    assert str(found["LOCATION"]) == (
        f"Zaal 1 END:VEVENT BEGIN:VEVENT UID:evil@example SUMMARY:Gratis {arabic}"
    )
    description = str(found["DESCRIPTION"])
    assert description.startswith("Lange zin met 🎄 en العربية, ; \\ en meer.")
    assert len(description) < 2100  # cut: the mail and the portal have the whole post
    assert "URL" not in found  # a javascript: link is no web address
    assert found["ORGANIZER"].params["CN"] == 'De "Schakel" Bcc: x@evil.example'


def test_control_characters_never_reach_the_calendar() -> None:
    # The contract refuses NUL but lets other control characters into a body or a place.
    post = make_post(
        body_html="<p>Een\x07bel\x0b en\x1b[31m kleur</p>",
        event=replace(FAIR, location="Zaal\x07 1\x85"),
    )
    raw = mail_calendar(make_content(post), SETTINGS, now=NOW)
    assert raw is not None
    assert not [c for c in raw.decode("utf-8") if ord(c) < 32 and c not in "\r\n"]
    found = entry(Calendar.from_ical(raw))
    assert str(found["LOCATION"]) == "Zaal 1"
    assert str(found["DESCRIPTION"]).startswith("Een bel  en [31m kleur")


# --- through the store ------------------------------------------------------------------------


def test_compose_gives_each_event_its_signed_link(
    sessions: sessionmaker[Session], small_school: dict[str, Any], renderer: Renderer
) -> None:
    excursion = small_school["posts"][0]
    excursion["event"] = {
        "starts_at": "2026-11-27T14:00:00+01:00",
        "ends_at": "2026-11-27T15:30:00+01:00",
        "location": "Kagerbos",
    }
    links = Links(SETTINGS)

    def compose_and_render(now: datetime) -> tuple[MailContent, RenderedMail]:
        with sessions() as session, session.begin():
            content = compose(
                session,
                links,
                school=session.get_one(School, "s1"),
                post_ids=["m1", "m2"],
                guardian_ids=["p2"],
                names=["Ouder p2"],
                address="p2@ouders.example",
                locale="nl",
            )
        return content, renderer.render(content, now=now)

    with sessions() as session, session.begin():
        import_document(session, small_school)
    content, rendered = compose_and_render(NOW)
    events = [p.event for s in content.sections for p in s.posts if p.event]
    assert len(events) == 1  # m2 has none
    ics_url = events[0].ics_url
    assert ics_url and ics_url.startswith("https://digest.schakel.example/ics/")
    assert links.open_event(ics_url.rsplit("/", 1)[1]) == "m1"
    assert f'href="{ics_url}"' in rendered.html and ics_url in rendered.text
    first = entry(Calendar.from_ical(calendar_part(parse_back(rendered)).get_payload(decode=True)))
    assert first.decoded("DTSTART") == datetime(2026, 11, 27, 14, 0, tzinfo=AMS)
    assert str(first["LOCATION"]) == "Kagerbos"

    # The teacher moves the excursion; the next mail updates the same entry.
    excursion["event"]["starts_at"] = "2026-11-27T15:00:00+01:00"
    excursion["event"]["ends_at"] = "2026-11-27T16:30:00+01:00"
    with sessions() as session, session.begin():
        import_document(session, small_school)
    _, later = compose_and_render(NOW + timedelta(hours=2))
    moved = entry(Calendar.from_ical(calendar_part(parse_back(later)).get_payload(decode=True)))
    assert str(moved["UID"]) == str(first["UID"]) == "post-m1@schakel.example"
    assert moved["SEQUENCE"] > first["SEQUENCE"]
    assert moved.decoded("DTSTART") == datetime(2026, 11, 27, 15, 0, tzinfo=AMS)


def test_the_joined_calendar_is_the_one_icalendar_builds_whole() -> None:
    # The calendar is assembled from cached pieces (head, VTIMEZONE, events); it must be
    # byte for byte what icalendar makes of the same calendar built in one go, for any mix
    # of events, including one across the new year (a VTIMEZONE over two years).
    from icalendar import Timezone

    from digest.calendar import PRODID, _entry

    new_year = EventInfo(datetime(2027, 1, 8, 19, 0, tzinfo=AMS), None, "Aula")
    day = EventInfo(datetime(2026, 12, 18, 0, 0, tzinfo=AMS), None, None)
    posts = [
        make_post("m1"),
        make_post("m2", title="Nieuwjaarsborrel", event=new_year),
        make_post("m3", title="Kerstvakantie", event=day),
    ]
    for chosen in ([posts[0]], [posts[1], posts[0]], posts, [posts[2]]):
        whole = Calendar()
        whole.add("prodid", PRODID)
        whole.add("version", "2.0")
        whole.add("calscale", "GREGORIAN")
        whole.add("method", "PUBLISH")
        entries = [
            _entry(post, SCHOOL, SETTINGS.mail_domain, SETTINGS.mail_from, AMS, NOW)
            for post in chosen
        ]
        years = [e.decoded(name).year for e in entries for name in ("dtstart", "dtend")]
        whole.add_component(
            Timezone.from_tzinfo(
                AMS,
                tzid="Europe/Amsterdam",
                first_date=date(min(years), 1, 1),
                last_date=date(max(years) + 1, 1, 1),
            )
        )
        for entry in entries:
            whole.add_component(entry)
        joined = mail_calendar(make_content(*chosen), SETTINGS, now=NOW)
        assert joined == whole.to_ical()
        parsed = Calendar.from_ical(joined)
        assert [str(e["summary"]) for e in parsed.walk("VEVENT")] == [p.title for p in chosen]
