"""Approval tests: each post kind's mail, in Dutch and in English, against tests/golden/.

A missing golden file is written and the test fails, so CI never passes on one; after a
deliberate change, ``UPDATE_GOLDEN=1`` rewrites them all. Read the files before committing:
they are what parents read. The HTML is compared with its whitespace collapsed and one tag per
line; the text part as it is. Neither holds a Message-ID or a Date.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

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
from digest.render import Renderer
from digest.settings import Settings

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)  # the cutoff of week 48
PUBLISHED = datetime(2026, 11, 27, 14, 0, tzinfo=AMS)  # "vrijdag 27 november, 14:00"
BASE = "https://nieuwsbrief.deschakel.example"
BODY = (
    "<p>Beste ouders,</p><p>Vandaag hebben de kinderen van groep 5 hun werkstukken over de herfst "
    'gepresenteerd. Op <a href="https://www.deschakel.example/herfst">de website</a> staat meer.'
    "</p><ul><li>laarzen</li><li>een regenjas</li></ul><p>Groeten, juf Anne</p>"
)


def media(name: str, alt: str = "", *, video: bool = False) -> Photo:
    return Photo(
        url=f"{BASE}/media/{name}",
        alt=alt,
        is_video=video,
        link="https://portal.example/posts/p1" if video else None,
    )


# One post of each kind; everything else about the mail is the same.
POSTS: dict[str, PostContent] = {
    "message": PostContent(
        id="p1",
        kind="message",
        title="Werkstukken over de herfst",
        author="Juf Anne",
        published_at=PUBLISHED,
        body_html=BODY,
        url="https://portal.example/posts/p1",
    ),
    "photos": PostContent(
        id="p1",
        kind="photos",
        title="Sinterklaas op school",
        author="Juf Anne",
        published_at=PUBLISHED,
        body_html="<p>Wat een feest was het!</p>",
        url="https://portal.example/posts/p1",
        photos=(
            media("f1", "Sinterklaas op het plein"),
            media("f2"),  # no alt from the portal: the template says "Foto uit Groep 5"
            *(media(f"f{i}", f"De pieten in de klas, foto {i}") for i in range(3, 9)),
        ),
        withheld_photos=2,
        gallery_url=f"{BASE}/gallery/p1",
    ),
    "event": PostContent(
        id="p1",
        kind="event",
        title="Kerstviering in de kerk",
        author="Directie",
        published_at=PUBLISHED,
        body_html="<p>Alle ouders zijn welkom bij de kerstviering.</p>",
        url="https://portal.example/posts/p1",
        event=EventInfo(
            datetime(2026, 12, 17, 18, 30, tzinfo=AMS),
            datetime(2026, 12, 17, 19, 30, tzinfo=AMS),
            "Pauluskerk, Kerkstraat 1",
            ics_url=f"{BASE}/ics/p1.ics",
        ),
    ),
    "link": PostContent(
        id="p1",
        kind="link",
        title="Leestips voor de vakantie",
        author="Juf Anne",
        published_at=PUBLISHED,
        body_html="<p>De bibliotheek heeft een mooie lijst gemaakt.</p>",
        url="https://portal.example/posts/p1",
        links=(LinkInfo("https://www.bibliotheek.example/leestips", "Leestips van de bieb"),),
    ),
    "meeting": PostContent(
        id="p1",
        kind="meeting",
        title="Oudergesprekken",
        author="Meester Bram",
        published_at=PUBLISHED,
        body_html="<p>In december spreken we alle ouders over hun kind.</p>",
        url="https://portal.example/posts/p1",
        signup=SignupInfo(
            "https://portal.example/gesprekken",
            deadline=datetime(2026, 12, 4, 17, 0, tzinfo=AMS),
        ),
    ),
    "help": PostContent(
        id="p1",
        kind="help",
        title="Hulp bij de kerstmarkt",
        author="Ouderraad",
        published_at=PUBLISHED,
        body_html="<p>Wie helpt ons een handje?</p>",
        url="https://portal.example/posts/p1",
        signup=SignupInfo(
            "https://portal.example/hulp",
            needed_at=datetime(2026, 12, 18, 15, 0, tzinfo=AMS),
            deadline=datetime(2026, 12, 11, 17, 0, tzinfo=AMS),
            what="Kraampjes opbouwen",
        ),
    ),
    "video": PostContent(
        id="p1",
        kind="message",
        title="Ons kerstlied",
        author="Juf Anne",
        published_at=PUBLISHED,
        body_html="<p>Luister naar ons kerstlied!</p>",
        url="https://portal.example/posts/p1",
        photos=(media("v1", "Groep 5 zingt het kerstlied", video=True), media("v2", video=True)),
    ),
}


def mail(kind: str, locale: str) -> MailContent:
    return MailContent(
        school=SchoolInfo(
            "s1", "De Schakel", "Europe/Amsterdam", "info@schakel.example", "https://portal.example"
        ),
        locale=locale,
        recipient_names=("Fatma Yilmaz",),
        address="f.yilmaz@example.org",
        sections=(GroupSection("g5", "Groep 5", "class", (POSTS[kind],)),),
        week=48,
        preferences_url=f"{BASE}/p/preferences-token",
        unsubscribe_url=f"{BASE}/u/unsubscribe-token",
    )


_BLOCK = re.compile(
    r"\s*(<(?:!--|(?:html|head|body|style|title|meta|div|table|tbody|tr|td|h[1-6]|p|ul|li)\b))"
)


def normalised_html(html: str) -> str:
    """Whitespace collapsed, then a line per opening block tag: a change reads as a small diff."""
    return _BLOCK.sub(r"\n\1", " ".join(html.split())).strip() + "\n"


def approve(files: dict[str, str]) -> None:
    """Each file's text equals its golden file; a missing one (or all, when updating) is written."""
    written = []
    for name, actual in files.items():
        path = GOLDEN / name
        if UPDATE or not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            written.append(f"tests/golden/{name}")
    if written:
        pytest.fail(f"wrote {', '.join(written)}: read, then commit (this run does not pass)")
    for name, actual in files.items():
        expected = (GOLDEN / name).read_text(encoding="utf-8")
        assert actual == expected, f"{name} differs; after a deliberate change UPDATE_GOLDEN=1"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Settings(mail_from="nieuwsbrief@schakel.example"))


@pytest.mark.parametrize("locale", ["nl", "en"])
@pytest.mark.parametrize("kind", list(POSTS))
def test_golden(renderer: Renderer, kind: str, locale: str) -> None:
    rendered = renderer.render(mail(kind, locale), now=NOW)
    approve(
        {
            f"{kind}.{locale}.txt": rendered.text,
            f"{kind}.{locale}.html": normalised_html(rendered.html),
        }
    )


# --- what the golden files must show, checked by meaning as well ------------------------------


def tags(html: str, name: str) -> list[str]:
    return re.findall(rf"<{name}\b[^>]*>", html)


@pytest.mark.parametrize("locale", ["nl", "en"])
def test_headings_alt_text_and_language(renderer: Renderer, locale: str) -> None:
    for kind in POSTS:
        html = renderer.render(mail(kind, locale), now=NOW).html
        assert [len(tags(html, f"h{level}")) for level in (1, 2, 3)] == [1, 1, 1], kind
        assert f'<html lang="{locale}"' in html
        assert all(re.search(r'alt="[^"]+"', image) for image in tags(html, "img")), kind
    post = replace(mail("message", locale), kind="post")
    html = renderer.render(post, now=NOW).html
    assert [len(tags(html, f"h{level}")) for level in (1, 2, 3)] == [1, 1, 0]  # no level skipped


def test_a_missing_alt_is_written_in_the_mails_language(renderer: Renderer) -> None:
    dutch = renderer.render(mail("photos", "nl"), now=NOW).html
    english = renderer.render(mail("photos", "en"), now=NOW).html
    assert 'alt="Foto uit Groep 5"' in dutch and 'alt="Photo from Groep 5"' in english
    video = renderer.render(mail("video", "en"), now=NOW).html
    assert 'alt="Video from Groep 5"' in video


def test_each_photo_links_to_itself_and_the_rest_to_the_album(renderer: Renderer) -> None:
    html = renderer.render(mail("photos", "en"), now=NOW).html
    links = re.findall(r'<a href="([^"]+)"[^>]*><img src="([^"]+)"', html)
    assert len(links) == 6 and all(href == src for href, src in links)
    assert f'<a href="{BASE}/gallery/p1"' in html and "See 2 more photos in the album" in html


def test_a_video_is_a_still_with_a_play_bar_to_the_portal(renderer: Renderer) -> None:
    html = renderer.render(mail("video", "nl"), now=NOW).html
    assert "<video" not in html and "<iframe" not in html
    stills = re.findall(r'<a href="([^"]+)"[^>]*><img ', html)
    bars = re.findall(
        r'<p class="play"[^>]*><a href="([^"]+)"[^>]*>▶\ufe0e Bekijk de video</a>', html
    )
    assert stills == bars == ["https://portal.example/posts/p1"] * 2
    assert "position:" not in html  # mail clients drop positioning: no overlay


def test_a_link_post_shows_title_and_domain(renderer: Renderer) -> None:
    html = renderer.render(mail("link", "nl"), now=NOW).html
    assert re.search(
        r'<p class="linkbox"[^>]*><a href="https://www.bibliotheek.example/leestips"[^>]*>'
        r"<strong>Leestips van de bieb</strong></a><br><span[^>]*>bibliotheek.example</span>",
        html,
    )
