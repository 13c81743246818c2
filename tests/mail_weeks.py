"""Weeks of news for measuring the mail: a typical week, and heavy ones that need parts.

Shared by tests/test_render_size.py and bench/mail_size.py. The links are the service's real
signed ones, because their length is part of what a photo weighs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from digest.content import (
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
from digest.sanitize import clean_teacher_html
from digest.settings import Settings

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)
SETTINGS = Settings(
    mail_from="nieuwsbrief@schakel.example",
    base_url="https://nieuwsbrief.deschakel-emmeloord.example",
    secret_key="a-test-key-that-is-long-enough-for-signing",
)
LINKS = Links(SETTINGS)
UNSUBSCRIBE = LINKS.unsubscribe(["p1"])

# A teacher's ordinary post: a greeting, two paragraphs, a list, a link, a closing.
PARAGRAPH = (
    "Deze week hebben we in de klas hard gewerkt aan het project over de herfst. De kinderen "
    "hebben bladeren verzameld in het park, ze op soort gesorteerd en er samen een grote collage "
    "van gemaakt die nu in de gang hangt. Kom gerust een keer kijken als u uw kind brengt. "
)
BODY = clean_teacher_html(
    f"<p>Beste ouders,</p><p>{PARAGRAPH * 2}</p>"
    "<p>Volgende week oefenen we de tafels van 6 en 7. Oefent u thuis een beetje mee?</p>"
    "<ul><li>laarzen en een regenjas</li><li>een lunchpakket</li><li>de toestemmingsbrief</li>"
    f"</ul><p>{PARAGRAPH}</p>"
    '<p>Meer op <a href="https://www.deschakel.example/nieuws/herfst">de website</a>.</p>'
    "<p>Hartelijke groet,<br>Juf Anne</p>"
)


def photos(prefix: str, count: int) -> tuple[Photo, ...]:
    # The service's real signed links: their length is part of the weight of a photo.
    return tuple(
        Photo(url=LINKS.media(f"{prefix}-{i}"), alt=f"Kinderen aan het werk, foto {i + 1}")
        for i in range(count)
    )


def make_post(id: str, title: str | None = None, **fields: Any) -> PostContent:
    values: dict[str, Any] = {
        "id": id,
        "kind": "message",
        "title": title or f"Bericht {id}",
        "author": "Juf Anne",
        "published_at": datetime(2026, 11, 24, 10, 15, tzinfo=AMS),
        "body_html": BODY,
        "url": f"https://portal.example/posts/{id}",
        **fields,
    }
    return PostContent(**values)


def make_content(*sections: GroupSection, locale: str = "nl") -> MailContent:
    return MailContent(
        school=SchoolInfo("s1", "De Schakel", "Europe/Amsterdam", "info@schakel.example", None),
        locale=locale,
        recipient_names=("Fatma Yilmaz",),
        address="f.yilmaz@example.org",
        sections=sections,
        week=48,
        preferences_url=LINKS.preferences(["p1"]),
        unsubscribe_url=UNSUBSCRIBE,
    )


def typical_week(locale: str = "nl") -> MailContent:
    """3 groups × 3 ordinary posts with a few photos each, an event, a link and a sign-up."""
    sections = []
    for g, name in enumerate(("Groep 5", "Groep 7", "De Schakel")):
        posts = (
            make_post(f"{g}a", f"Herfstproject in {name}", kind="photos", photos=photos("a", 5)),
            make_post(f"{g}b", f"Sinterklaas in {name}", photos=photos("b", 3), withheld_photos=1),
            make_post(
                f"{g}c",
                f"Oudergesprekken in {name}",
                kind="meeting",
                photos=photos("c", 2),
                event=EventInfo(
                    datetime(2026, 12, 2, 9, 0, tzinfo=AMS),
                    datetime(2026, 12, 2, 12, 0, tzinfo=AMS),
                    "Kagerbos",
                    ics_url=LINKS.event(f"{g}c"),
                ),
                links=(LinkInfo("https://www.natuurmonumenten.nl/kagerbos", "Het Kagerbos"),),
                signup=SignupInfo(
                    "https://portal.example/signup/1",
                    deadline=datetime(2026, 11, 30, 17, 0, tzinfo=AMS),
                ),
            ),
        )
        sections.append(GroupSection(f"g{g}", name, "class", posts))
    return make_content(*sections, locale=locale)


LONG_WORDS = [f"woord{i:04d}" for i in range(5000)]  # each findable, none inside another


def long_post() -> PostContent:
    """A 5,000-word post in paragraphs of 100 words."""
    paragraphs = (" ".join(LONG_WORDS[i : i + 100]) for i in range(0, len(LONG_WORDS), 100))
    body = clean_teacher_html("".join(f"<p>{text}</p>" for text in paragraphs))
    return make_post("long", "Het jaarverslag van de MR", body_html=body)


def many_photos_post() -> PostContent:
    return make_post(
        "many",
        "Sinterklaasfeest in beeld",
        kind="photos",
        photos=photos("many", 40),
        gallery_url=LINKS.gallery("many"),
    )


def busy_group() -> GroupSection:
    """Twelve ordinary posts, each with a few photos, in one group."""
    posts = tuple(make_post(f"busy{i:02d}", photos=photos(f"busy{i}", 4)) for i in range(12))
    return GroupSection("g5", "Groep 5", "class", posts)


HEAVY_WEEKS: dict[str, Callable[[], MailContent]] = {
    "40 photos in one post": lambda: make_content(
        GroupSection("g7", "Groep 7", "class", (many_photos_post(),))
    ),
    "a 5,000-word post": lambda: make_content(
        GroupSection("mr", "MR", "committee", (long_post(),))
    ),
    "12 posts in one group": lambda: make_content(busy_group()),
    "all three together": lambda: make_content(
        busy_group(),
        GroupSection("g7", "Groep 7", "class", (many_photos_post(),)),
        GroupSection("mr", "MR", "committee", (long_post(),)),
    ),
}
