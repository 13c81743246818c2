"""A week that pushes the mail's layout: every kind of block, many photos, words that don't wrap.

Teachers paste long URLs, Dutch makes compound words longer than a phone is wide, and an
editor's table survives as its text (the sanitiser drops table tags, keeping cells' words).
"""

from __future__ import annotations

from datetime import datetime
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
from digest.render import MAX_THUMBNAILS
from digest.sanitize import clean_teacher_html

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)  # the cutoff of week 48

LONG_WORD = "kinderboekenweekvoorleeswedstrijdfinalistenuitnodigingsbrievenbezorging"
LONG_URL = (
    "https://portal.example/bestanden/2026-2027/groep-7-8/excursies/"
    "toestemmingsformulier-natuurmuseum-vervoer-en-lunchpakket-definitieve-versie-3.pdf"
    "?download=1&token=a8f3c2d1e0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1"
)
LOCATION = "Natuurmuseum Flevoland-Noordoostpolder, Educatieruimte-Kelderverdieping-Zuidvleugel"
# An editor's table: the sanitiser keeps its words, one line per row.
WIDE_TABLE = (
    "<table><tr>"
    + "".join(f"<th>Dag{d}</th>" for d in range(1, 9))
    + "</tr><tr>"
    + "".join(f"<td>Gymzaal-De-Bolder-{d}-Sportlaan-1234AB-Emmeloord</td>" for d in range(1, 9))
    + "</tr></table>"
)
BODY = (
    f"<h1>Belangrijk: de {LONG_WORD}</h1>"
    f"<p>Beste ouders, lees de {LONG_WORD} goed door. Lees ook "
    f'<a href="{LONG_URL}">het formulier</a>, als link: <a href="{LONG_URL}">{LONG_URL}</a> '
    f"en als tekst: {LONG_URL}</p>"
    f"{WIDE_TABLE}"
    "<blockquote><p>Wie niet waagt, die niet wint.</p></blockquote>"
    "<h3>Meenemen</h3><ol><li>laarzen</li><li>een regenjas</li>"
    f"<li>een {LONG_WORD}</li></ol><h4>Tot slot</h4><p>Groeten, juf Anne</p>"
)


def heavy_week(links: Links, locale: str = "nl") -> MailContent:
    """Two groups: a post with everything a post can hold; the sign-ups and a link post."""
    photos = tuple(
        Photo(
            url=links.media(f"heavy-{i}"),
            alt=f"Kinderen van groep 7/8 in het natuurmuseum, foto {i + 1}",
            is_video=i == 1,
            link="https://portal.example/video/1" if i == 1 else None,
        )
        for i in range(MAX_THUMBNAILS + 3)
    )
    everything = PostContent(
        id="h1",
        kind="event",
        title=f"Excursie naar het natuurmuseum en de {LONG_WORD}",
        author="Juf Anne-Marie van den Berg-Oosterhuis",
        published_at=datetime(2026, 11, 24, 10, 15, tzinfo=AMS),
        body_html=clean_teacher_html(BODY),
        url="https://portal.example/posts/h1",
        photos=photos,
        withheld_photos=2,
        event=EventInfo(
            datetime(2026, 12, 2, 9, 0, tzinfo=AMS),
            datetime(2026, 12, 2, 15, 30, tzinfo=AMS),
            LOCATION,
        ),
        links=(
            LinkInfo(LONG_URL, ""),
            LinkInfo("https://www.natuurmuseumflevolandnoordoostpolder.nl/", "Het museum"),
        ),
    )
    help_wanted = PostContent(
        id="h2",
        kind="help",
        title="Hulp gezocht",
        author="Meester Bram",
        published_at=datetime(2026, 11, 25, 9, 0, tzinfo=AMS),
        body_html="<p>Wie rijdt er mee?</p>",
        url="https://portal.example/posts/h2",
        signup=SignupInfo(
            LONG_URL,
            needed_at=datetime(2026, 12, 2, 8, 30, tzinfo=AMS),
            deadline=datetime(2026, 11, 30, 17, 0, tzinfo=AMS),
            what=f"Drie ouders om te rijden en een {LONG_WORD}",
        ),
    )
    meeting = PostContent(
        id="h3",
        kind="meeting",
        title="Oudergesprekken",
        author="Directie",
        published_at=datetime(2026, 11, 26, 12, 0, tzinfo=AMS),
        body_html="<p>Kies een tijd.</p>",
        url=None,
        signup=SignupInfo(
            "https://portal.example/gesprekken", deadline=datetime(2026, 12, 4, 17, 0, tzinfo=AMS)
        ),
    )
    practice = PostContent(
        id="h4",
        kind="link",
        title="Oefenen met tafels thuis",
        author="Meester Bram",
        published_at=datetime(2026, 11, 26, 15, 0, tzinfo=AMS),
        body_html="<p>Tien minuten per dag helpt.</p>",
        url="https://portal.example/posts/h4",
        links=(LinkInfo("https://www.rekenweb.nl/tafels", "Rekenweb: oefenen met de tafels"),),
    )
    return MailContent(
        school=SchoolInfo(
            id="s1",
            name="Openbare Basisschool De Klimop-Regenboog Noordoostpolder",
            timezone="Europe/Amsterdam",
            reply_to="info@klimop.example",
            portal_url="https://portal.example",
        ),
        locale=locale,
        recipient_names=("Fatma Yilmaz",),
        address="f.yilmaz@example.org",
        sections=(
            GroupSection("g78", "Groep 7/8 Bovenbouw-Combinatieklas", "class", (everything,)),
            GroupSection(
                "gs", "Openbare Basisschool De Klimop", "school", (help_wanted, meeting, practice)
            ),
        ),
        week=48,
        preferences_url=links.preferences(["p1"]),
        unsubscribe_url=links.unsubscribe(["p1"]),
    )
