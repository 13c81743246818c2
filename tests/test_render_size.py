"""Mail size: lean HTML for a typical week, and heavy weeks split into numbered parts, each
complete and under Gmail's clip, with nothing lost."""

from __future__ import annotations

import email
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP, default

import pytest
from conftest import child, document, group, guardian, post, school
from mail_weeks import (
    AMS,
    HEAVY_WEEKS,
    LINKS,
    LONG_WORDS,
    NOW,
    SETTINGS,
    UNSUBSCRIBE,
    busy_group,
    long_post,
    make_content,
    make_post,
    typical_week,
)
from sqlalchemy.orm import Session, sessionmaker

from digest.compose import compose
from digest.content import (
    MAX_THUMBNAILS,
    GroupSection,
    MailContent,
)
from digest.ingest import import_document
from digest.models import School
from digest.render import (
    CLIP_BYTES,
    GMAIL_CLIP_BYTES,
    RenderedMail,
    Renderer,
    first_part_message_id,
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def html_part(mail: RenderedMail) -> str:
    """The HTML part as a mail client decodes it from the bytes on the wire (CRLF and all)."""
    parsed = email.message_from_bytes(mail.message.as_bytes(policy=SMTP), policy=default)
    assert isinstance(parsed, EmailMessage)
    part = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


def titles(content: MailContent) -> list[str]:
    return [post.title for section in content.sections for post in section.posts]


def first_index(text: str, words: list[str]) -> list[int]:
    return [text.index(word) for word in words]


# --- lean markup --------------------------------------------------------------------------------


def test_a_typical_week_is_lean(renderer: Renderer) -> None:
    week = typical_week()  # built once: its signed links hold the time they were made
    mail = renderer.render(week, now=NOW)
    assert mail.size <= 75_000, mail.size  # the aim; 40,039 bytes when this was written
    assert renderer.render_parts(week, now=NOW)[0].html == mail.html


def test_mjmls_reset_is_not_copied_onto_every_element(renderer: Renderer) -> None:
    html = renderer.render(typical_week(), now=NOW).html
    outside_comments = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    # Outlook's table spacing and image scaling stay in its own conditional <style> …
    assert "mso-table-lspace" not in outside_comments
    assert "-ms-interpolation-mode" not in outside_comments
    assert re.search(r"<!--\[if mso\]><style>[^<]*mso-table-lspace", html)
    # … while what every client needs is still on the elements.
    image = re.search(r"<img [^>]*>", html)
    assert image and re.search(r'style="[^"]*border:0[^"]*height:auto', image.group(0))
    assert '<p style="margin:0 0 12px">Beste ouders,</p>' in html


# --- heavy weeks ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(HEAVY_WEEKS))
def test_heavy_week_parts_are_complete_and_under_the_clip(renderer: Renderer, case: str) -> None:
    content = HEAVY_WEEKS[case]()
    mails = renderer.render_parts(content, now=NOW)
    htmls = [html_part(mail) for mail in mails]
    for mail, html in zip(mails, htmls, strict=True):
        assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES
        assert mail.size <= CLIP_BYTES
        # Every part is a whole mail: masthead, overview, footer with the unsubscribe link.
        assert "<h1" in html and "Nieuwsbrief – week 48" in html
        assert "U ontvangt deze nieuwsbrief omdat" in html
        assert f'href="{UNSUBSCRIBE}"' in html
        assert UNSUBSCRIBE in mail.text
        assert mail.message["List-Unsubscribe"] is not None
    # Nothing lost, nothing twice, in order: every title once across the parts, in both parts.
    joined_html, joined_text = "".join(htmls), "".join(mail.text for mail in mails)
    for title in titles(content):
        assert joined_html.count(f">{title}</h3>") == 1, title
        assert title in joined_text
    positions = first_index(joined_html, [f">{title}</h3>" for title in titles(content)])
    assert positions == sorted(positions)
    if any(post.id == "long" for section in content.sections for post in section.posts):
        html_words = set(re.findall(r"woord\d{4}", joined_html))
        text_words = set(re.findall(r"woord\d{4}", joined_text))
        assert html_words == text_words == set(LONG_WORDS)
    if len(mails) > 1:
        count = len(mails)
        for number, mail in enumerate(mails, start=1):
            label = f"(deel {number} van {count})"
            assert mail.subject == f"Nieuwsbrief De Schakel – week 48 {label}"
            assert re.search(rf"<h1[^>]*>Nieuwsbrief – week 48 {re.escape(label)}</h1>", mail.html)
        ids = [str(mail.message["Message-ID"]) for mail in mails]
        assert len(set(ids)) == count
        # Later parts carry part 1's id with ".pN", so a bounce of any part finds the row.
        assert [first_part_message_id(i) for i in ids] == [None] + [ids[0]] * (count - 1)
    if case == "all three together":
        assert len(mails) == 2  # too much for one mail, and no more parts than needed


def test_many_photos_show_the_first_few_and_link_the_album(renderer: Renderer) -> None:
    content = HEAVY_WEEKS["40 photos in one post"]()
    (mail,) = renderer.render_parts(content, now=NOW)
    assert mail.html.count("<img ") == MAX_THUMBNAILS
    album = content.sections[0].posts[0].gallery_url
    assert album is not None
    assert f'<a href="{album}"' in mail.html
    assert "Bekijk nog 34 foto's in het fotoalbum" in mail.html.replace("&#39;", "'")
    assert "Alle foto's in het fotoalbum [" in mail.text and album in mail.text


def test_a_split_group_repeats_its_heading_and_each_part_sums_up_itself(
    renderer: Renderer,
) -> None:
    content = make_content(busy_group(), GroupSection("g7", "Groep 7", "class", (make_post("x"),)))
    whole = renderer.render(content, now=NOW)
    limit = whole.size // 2
    mails = renderer.render_parts(content, now=NOW, limit=limit)
    assert len(mails) >= 3 and all(mail.size <= limit for mail in mails)
    headings = [re.findall(r"<h2[^>]*>(.*?)</h2>", mail.html) for mail in mails]
    assert headings[0] == ["Groep 5"]
    assert all(part[0] in ("Groep 5 (vervolg)", "Groep 7") for part in headings[1:])
    assert [h for part in headings for h in part].count("Groep 7") == 1
    counts = []
    for mail, part_headings in zip(mails, headings, strict=True):
        for heading in part_headings:
            assert f"{heading}\n{'=' * len(heading)}" in mail.text
        # The overview (and so the preheader) sums up this part, not the week.
        match = re.search(r"In dit deel: (\d+) berichten? uit ([^.]*)\.", mail.text)
        assert match, mail.text[:300]
        assert match.group(0) in mail.html
        counts.append(int(match.group(1)))
        named = match.group(2).replace(" en ", ", ").split(", ")
        assert named == [heading.removesuffix(" (vervolg)") for heading in part_headings]
        assert counts[-1] == len(titles_in(mail))
    assert sum(counts) == 13


def test_a_post_too_large_alone_is_sent_whole_with_a_warning(
    renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    content = make_content(
        GroupSection("g5", "Groep 5", "class", (make_post("before"), long_post())),
        GroupSection("g7", "Groep 7", "class", (make_post("after"),)),
    )
    limit = 30_000  # less than the long post needs on its own
    with caplog.at_level(logging.WARNING, logger="digest.render"):
        mails = renderer.render_parts(content, now=NOW, limit=limit)
    assert [titles_in(mail) for mail in mails] == [
        ["Bericht before"],
        ["Het jaarverslag van de MR"],
        ["Bericht after"],
    ]
    assert mails[1].size > limit and set(re.findall(r"woord\d{4}", mails[1].html)) == set(
        LONG_WORDS
    )
    assert [r.getMessage() for r in caplog.records if "long" in r.getMessage()]
    assert all(mail.size <= limit for mail in (mails[0], mails[2]))


def titles_in(mail: RenderedMail) -> list[str]:
    return re.findall(r"<h3[^>]*>(.*?)</h3>", mail.html)


def test_a_per_post_mail_is_never_split(
    renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    content = replace(
        make_content(GroupSection("mr", "MR", "committee", (long_post(),))), kind="post"
    )
    with caplog.at_level(logging.WARNING, logger="digest.render"):
        (mail,) = renderer.render_parts(content, now=NOW, limit=10_000)
    assert "deel" not in mail.subject
    assert "post long alone" in caplog.text


# --- from the store: the album link and the alt text come from compose --------------------------


def test_compose_links_the_album_and_leaves_a_missing_alt_to_the_template(
    sessions: sessionmaker[Session], renderer: Renderer
) -> None:
    published = datetime(2026, 11, 26, 12, 0, tzinfo=AMS)
    media = [
        {
            "id": f"f{i}",
            "type": "image",
            "url": f"https://portal.example/f{i}.jpg",
            "alt": None if i == 0 else f"Pieten op het plein {i}",
            "child_ids": ["c1"],
        }
        for i in range(40)
    ]
    doc = document(
        schools=[school()],
        groups=[group("g5", name="Groep 5")],
        children=[child("c1", ["g5"], consent="email")],
        guardians=[guardian("p1", ["c1"])],
        posts=[
            post("many", "g5", published.isoformat(), kind="photos", media=media),
            post(
                "few",
                "g5",
                (published + timedelta(hours=1)).isoformat(),
                media=[{**item, "id": f"few-{item['id']}"} for item in media[:2]],
            ),
        ],
    )
    with sessions() as session, session.begin():
        import_document(session, doc)
    with sessions() as session:
        store_school = session.get_one(School, "s1")
        mails = {
            locale: compose(
                session,
                LINKS,
                school=store_school,
                post_ids=["many", "few"],
                guardian_ids=["p1"],
                names=["Ouder p1"],
                address="p1@ouders.example",
                locale=locale,
            )
            for locale in ("nl", "en")
        }
    many, few = mails["nl"].sections[0].posts
    assert many.gallery_url is not None and few.gallery_url is None
    assert LINKS.open_gallery(many.gallery_url.rsplit("/", 1)[1]) == "many"
    assert many.photos[0].alt == "" and many.photos[1].alt == "Pieten op het plein 1"
    dutch = renderer.render(mails["nl"], now=NOW).html
    english = renderer.render(mails["en"], now=NOW).html
    assert 'alt="Foto uit Groep 5"' in dutch and 'alt="Photo from Groep 5"' in english
    # Signed at compose time, so each mail has its own token (it holds the time).
    english_album = mails["en"].sections[0].posts[0].gallery_url
    assert f'href="{english_album}"' in english and "See 34 more photos in the album" in english
