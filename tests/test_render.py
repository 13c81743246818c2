"""The render stage: MailContent in, a complete EmailMessage out; no database, no network."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.pofile import read_po
from hypothesis import example, given
from hypothesis import strategies as st
from jinja2.ext import babel_extract

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
from digest.i18n import format_when, resolve_locale, translations
from digest.render import (
    MAX_THUMBNAILS,
    RenderedMail,
    Renderer,
    _PostLines,
    _textwrap_line,
    _wrap,
    _wrap_page,
    _wrap_words,
    _wrapped,
    templates_path,
)
from digest.sanitize import clean_teacher_html, teacher_html_to_text
from digest.settings import Settings

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)  # the cutoff of week 48
MEDIA = "https://digest.schakel.example/media/"
BODY = (
    "<p>Beste ouders,</p><p>Deze week gingen we naar het bos. De kinderen verzamelden bladeren, "
    "tekenden paddenstoelen en bouwden samen een hut van takken. Neem volgende week mee:</p>"
    "<ul><li>laarzen</li><li>een regenjas</li></ul>"
    '<p>Meer op <a href="https://school.example/bos" rel="noopener noreferrer">de website</a>.</p>'
)


# --- factories --------------------------------------------------------------------------------


def photos(prefix: str, count: int) -> tuple[Photo, ...]:
    return tuple(
        Photo(url=f"{MEDIA}{prefix}-{i}.sig", alt=f"Kinderen in het bos {i}") for i in range(count)
    )


def make_post(id: str = "m1", **fields: object) -> PostContent:
    values: dict[str, object] = {
        "id": id,
        "kind": "message",
        "title": "Excursie naar het bos",
        "author": "Juf Anne",
        "published_at": datetime(2026, 11, 24, 10, 15, tzinfo=AMS),
        "body_html": BODY,
        "url": f"https://portal.example/posts/{id}",
        **fields,
    }
    return PostContent(**values)  # type: ignore[arg-type]


def post_section(post: PostContent, name: str = "Groep 5") -> GroupSection:
    return GroupSection("g5", name, "class", (post,))


def make_content(*sections: GroupSection, **fields: object) -> MailContent:
    values: dict[str, object] = {
        "school": SchoolInfo(
            id="s1",
            name="De Schakel",
            timezone="Europe/Amsterdam",
            reply_to="info@schakel.example",
            portal_url="https://portal.example",
        ),
        "locale": "nl",
        "recipient_names": ("Fatma Yilmaz",),
        "address": "f.yilmaz@example.org",
        "sections": sections or (post_section(make_post()),),
        "week": 48,
        "preferences_url": "https://digest.schakel.example/preferences/tok",
        "unsubscribe_url": "https://digest.schakel.example/unsubscribe/tok",
        **fields,
    }
    return MailContent(**values)  # type: ignore[arg-type]


def typical_week(locale: str = "nl") -> MailContent:
    """3 groups × 3 posts: photos, a withheld photo, an event, a link, a sign-up."""
    sections = []
    for g, name in enumerate(("Groep 5", "Groep 7", "De Schakel")):
        posts = (
            make_post(f"m{g}a", title=f"Excursie {name}", photos=photos(f"{g}a", 3)),
            make_post(
                f"m{g}b",
                title=f"Sinterklaas in {name}",
                author="Meester Bram",
                published_at=datetime(2026, 11, 25, 9, 0, tzinfo=AMS),
                photos=photos(f"{g}b", 4),
                withheld_photos=2,
            ),
            make_post(
                f"m{g}c",
                kind="meeting",
                title=f"Oudergesprekken {name}",
                author="Directie",
                event=EventInfo(
                    datetime(2026, 12, 2, 9, 0, tzinfo=AMS),
                    datetime(2026, 12, 2, 12, 0, tzinfo=AMS),
                    "Kagerbos",
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


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    settings = Settings(
        mail_from="nieuwsbrief@schakel.example", message_id_domain="schakel.example"
    )
    return Renderer(settings)


def render(renderer: Renderer, content: MailContent) -> RenderedMail:
    return renderer.render(content, now=NOW)


class Tags(HTMLParser):
    """Every start tag of an HTML document with its attributes (comments are not tags)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def all(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


def parse_back(rendered: RenderedMail) -> EmailMessage:
    parsed = email.message_from_bytes(rendered.message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- what a parent sees -----------------------------------------------------------------------


def test_subject_names_the_school_and_the_week(renderer: Renderer) -> None:
    assert render(renderer, typical_week("nl")).subject == "Nieuwsbrief De Schakel – week 48"
    assert render(renderer, typical_week("en")).subject == "Newsletter De Schakel – week 48"


def test_week_comes_from_the_cutoff_when_not_given(renderer: Renderer) -> None:
    content = make_content(week=None, cutoff=datetime(2026, 12, 4, 16, 0, tzinfo=AMS))
    assert render(renderer, content).subject.endswith("week 49")


def test_every_group_post_title_and_author_is_in_both_parts(renderer: Renderer) -> None:
    content = typical_week()
    rendered = render(renderer, content)
    for section in content.sections:
        assert section.name in rendered.html and section.name in rendered.text
        for post in section.posts:
            for words in (post.title, post.author):
                assert words in rendered.html and words in rendered.text


def test_overview_and_preheader_summarise_the_week(renderer: Renderer) -> None:
    rendered = render(renderer, typical_week())
    overview = "Deze week 9 berichten uit Groep 5, Groep 7 en De Schakel."
    assert overview in rendered.text
    preheader = re.search(r'<div style="display:none[^>]*>(.*?)</div>', rendered.html)
    assert preheader is not None and preheader.group(1).startswith(overview)
    # The overview comes before the first post.
    assert rendered.html.index(overview) < rendered.html.index("Excursie Groep 5")


@pytest.mark.parametrize(
    ("locale", "count", "line"),
    [
        ("nl", 2, "2 foto's staan alleen in het portaal"),
        ("nl", 1, "1 foto staat alleen in het portaal"),
        ("en", 2, "2 photos are only in the portal"),
        ("en", 1, "1 photo is only in the portal"),
    ],
)
def test_withheld_photos_are_counted(
    renderer: Renderer, locale: str, count: int, line: str
) -> None:
    post = make_post(withheld_photos=count)
    content = make_content(post_section(post), locale=locale)
    rendered = render(renderer, content)
    assert line in rendered.html.replace("&#39;", "'")
    assert line in rendered.text


def test_images_have_alt_text_and_only_the_signed_urls(renderer: Renderer) -> None:
    content = typical_week()
    given = {photo.url for s in content.sections for p in s.posts for photo in p.photos}
    images = Tags(render(renderer, content).html).all("img")
    assert images and all(image.get("alt") for image in images)
    assert {image["src"] for image in images} == given


def test_a_post_shows_at_most_six_thumbnails_and_counts_the_rest(renderer: Renderer) -> None:
    post = make_post(photos=photos("many", MAX_THUMBNAILS + 2))
    rendered = render(renderer, make_content(post_section(post)))
    assert len(Tags(rendered.html).all("img")) == MAX_THUMBNAILS
    assert "nog 2 foto&#39;s" in rendered.html or "nog 2 foto's" in rendered.html
    assert "8 foto's staan in de HTML-versie van deze mail." in rendered.text


def test_hostile_titles_and_names_are_text_not_markup(renderer: Renderer) -> None:
    title = '<script>alert(1)</script><a href="javascript:alert(2)" onclick="steal()">klik</a>'
    post = make_post(
        title=title,
        author='Juf <img src=x onerror="alert(3)">',
        body_html=clean_teacher_html('<p onclick="x()">Hoi<script>alert(4)</script></p>'),
        links=(LinkInfo("javascript:alert(5)", "Gevaarlijk"),),
        url="javascript:alert(6)",
    )
    rendered = render(renderer, make_content(post_section(post, "<b>Groep 5</b>")))
    html = rendered.html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as the words it is
    for tag, attrs in Tags(html).tags:
        assert tag not in ("script", "iframe", "object")
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("href", "src"):
            assert not (attrs.get(name) or "").lower().startswith("javascript:"), (tag, attrs)
    assert "Gevaarlijk" in html and "Gevaarlijk" in rendered.text
    assert "alert(4)" not in html and "alert(5)" not in html and "alert(6)" not in html
    assert title in " ".join(rendered.text.split())  # plain text has no markup to escape


def test_post_details_event_links_and_signup(renderer: Renderer) -> None:
    rendered = render(renderer, typical_week())
    assert "09:00\u2060–\u206012:00" in rendered.html  # the time range never breaks on a phone
    for part in (rendered.html.replace("\u2060", ""), rendered.text):
        assert "woensdag 2 december, 09:00–12:00" in part
        assert "Kagerbos" in part
        assert "Het Kagerbos" in part and "natuurmonumenten.nl" in part
        assert "Aanmelden kan tot maandag 30 november, 17:00" in part
    hrefs = {attrs.get("href") for attrs in Tags(rendered.html).all("a")}
    assert {"https://portal.example/signup/1", "https://portal.example/posts/m0a"} <= hrefs
    assert "Bekijk in het portaal" in rendered.html


def test_help_wanted_post(renderer: Renderer) -> None:
    post = make_post(
        kind="help",
        title="Hulp bij de kerstmarkt",
        signup=SignupInfo(
            "https://portal.example/help/1",
            needed_at=datetime(2026, 12, 17, 15, 0, tzinfo=AMS),
            what="Kraampjes opbouwen",
        ),
    )
    rendered = render(renderer, make_content(GroupSection("gs", "De Schakel", "school", (post,))))
    for part in (rendered.html, rendered.text):
        assert "Hulp gezocht" in part and "Kraampjes opbouwen" in part
        assert "donderdag 17 december, 15:00" in part and "Ik help mee" in part


def test_dutch_date_in_the_schools_zone(renderer: Renderer) -> None:
    # 09:15 UTC is 10:15 in Amsterdam on a Tuesday in November.
    post = make_post(published_at=datetime(2026, 11, 24, 9, 15, tzinfo=ZoneInfo("UTC")))
    rendered = render(renderer, make_content(post_section(post)))
    assert "dinsdag 24 november, 10:15" in rendered.html
    assert "dinsdag 24 november, 10:15" in rendered.text
    english = render(renderer, make_content(post_section(post), locale="en"))
    assert "Tuesday 24 November, 10:15" in english.html


def test_footer_says_why_and_links_settings_and_unsubscribe(renderer: Renderer) -> None:
    content = typical_week()
    rendered = render(renderer, content)
    hrefs = [attrs.get("href") for attrs in Tags(rendered.html).all("a")]
    assert content.preferences_url in hrefs and content.unsubscribe_url in hrefs
    why = "U ontvangt deze nieuwsbrief omdat u het nieuws van De Schakel per e-mail krijgt."
    assert why in rendered.html
    assert " ".join(why.split()) in " ".join(rendered.text.split())
    assert f"Afmelden:\n{content.unsubscribe_url}" in rendered.text or (
        f"Afmelden: {content.unsubscribe_url}" in rendered.text
    )


def test_parents_with_the_same_posts_each_get_their_own_links_and_nothing_of_anothers(
    renderer: Renderer,
) -> None:
    """The page is rendered once per mix of posts; each mail must still be its parent's alone."""
    settings_base = "https://digest.schakel.example/"
    week = typical_week()
    parents = [
        replace(
            week,
            recipient_names=(name,),
            address=address,
            # Long enough that "Afmelden: <url>" wraps in the text part, and one without links.
            preferences_url=f"{settings_base}p/{token * 12}" if token else None,
            unsubscribe_url=f"{settings_base}u/{token * 12}" if token else None,
        )
        for name, address, token in (
            ("Fatma Yilmaz", "f.yilmaz@example.org", "fatma"),
            ("Sem de Vries", "sem@example.org", "semdv"),
            ("Noor Bakker", "noor@example.org", ""),
        )
    ]
    mails = [render(renderer, content) for content in parents]
    for content, mail in zip(parents, mails, strict=True):
        # What a renderer that keeps no page, so never saw another parent's mail, gives.
        alone = Renderer(renderer._settings, pages_cached=0).render(
            content, now=NOW, message_id=mail.message_id
        )
        assert (mail.html, mail.text, mail.subject) == (alone.html, alone.text, alone.subject)
        assert mail.size == alone.size == len(mail.html.encode("utf-8"))  # Gmail's measure
        parsed = parse_back(mail)
        assert parsed["To"].addresses[0].addr_spec == content.address
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == mail.text
        html = parsed.get_body(("html",)).get_content()
        assert html.replace("\r\n", "\n").rstrip("\n") == mail.html.replace("\r\n", "\n")
        assert "\U000f0000" not in mail.html + mail.text  # no mark of the renderer's left
        others = [other for other in parents if other is not content]
        for other in others:
            for url in (other.preferences_url, other.unsubscribe_url):
                if url:
                    assert url.rsplit("/", 1)[1] not in mail.html + mail.text
            assert other.address not in mail.data.decode("ascii")
    first, _, without = mails
    assert f"Afmelden:\n{parents[0].unsubscribe_url}\n" in first.text  # wrapped as before
    assert "Afmelden" not in without.text and "/u/" not in without.html


def test_a_group_named_text_gets_its_post_as_text_in_the_text_part(renderer: Renderer) -> None:
    # A post's HTML and its text are kept apart in the renderer's cache whatever the group's
    # name: under the name "text" one used to be taken for the other.
    content = make_content(post_section(make_post(title="Schoolreis"), name="text"))
    mail = render(renderer, content)
    assert "Schoolreis" in mail.text and "<" not in mail.text
    assert mail.text == renderer.reference_text(content, now=NOW)
    assert "<table" in mail.html


def test_per_post_mail(renderer: Renderer) -> None:
    content = make_content(kind="post")
    rendered = render(renderer, content)
    assert rendered.subject == "De Schakel: Excursie naar het bos"
    assert "Nieuw in Groep 5" in rendered.html and "Excursie naar het bos" in rendered.text
    assert "elk nieuw bericht van De Schakel" in rendered.html
    two = make_content(kind="post", sections=(post_section(make_post()), post_section(make_post())))
    with pytest.raises(ValueError):
        renderer.render(two)


def test_empty_newsletter_says_so(renderer: Renderer) -> None:
    rendered = render(renderer, make_content(sections=()))
    assert "Deze week is er geen nieuws." in rendered.html
    assert "Deze week is er geen nieuws." in rendered.text


# --- language ---------------------------------------------------------------------------------


def test_language_follows_the_locale(renderer: Renderer) -> None:
    dutch = render(renderer, typical_week("nl"))
    english = render(renderer, typical_week("en"))
    assert '<html lang="nl"' in dutch.html and '<html lang="en"' in english.html
    assert "Bekijk in het portaal" in dutch.html and "Afmelden" in dutch.text
    assert "View in the portal" in english.html and "Unsubscribe" in english.text
    assert "Bekijk in het portaal" not in english.html
    assert "View in the portal" not in dutch.html
    assert "This week 9 posts from Groep 5, Groep 7, and De Schakel." in english.text


@pytest.mark.parametrize(("tag", "expected"), [("nl-BE", "nl"), ("tr", "nl"), ("en-GB", "en")])
def test_a_locale_without_catalogue_falls_back(renderer: Renderer, tag: str, expected: str) -> None:
    assert resolve_locale(tag, templates_path() / "locale") == expected
    rendered = render(renderer, typical_week(tag))
    assert f'<html lang="{expected}"' in rendered.html
    assert parse_back(rendered)["Content-Language"] == expected


def test_catalogues_translate_every_word_of_the_templates() -> None:
    wanted: set[str] = set()
    for template in templates_path().glob("*.j2"):
        with template.open("rb") as source:
            for _line, _func, message, _comments in babel_extract(
                source, ("_", "gettext", "ngettext"), [], {}
            ):
                msgid = message if isinstance(message, str) else message and message[0]
                assert msgid, template
                wanted.add(msgid)
    assert "View in the portal" in wanted
    for locale in ("nl", "en"):
        po = templates_path() / "locale" / locale / "LC_MESSAGES" / "digest.po"
        with po.open("rb") as source:
            catalog = read_po(source)
        translated = {
            m.id if isinstance(m.id, str) else m.id[0]
            for m in catalog
            if m.id and all(m.string if isinstance(m.string, tuple) else (m.string,))
        }
        assert wanted <= translated, (locale, wanted - translated)


def test_i18n_helpers() -> None:
    locale_dir = templates_path() / "locale"
    assert translations("nl-BE", locale_dir).gettext("Unsubscribe") == "Afmelden"
    assert translations("en", locale_dir).gettext("Unsubscribe") == "Unsubscribe"
    next_year = datetime(2027, 1, 5, 8, 30, tzinfo=AMS)
    assert format_when(next_year, AMS, "nl", now=NOW) == "dinsdag 5 januari 2027, 08:30"


# --- the HTML ---------------------------------------------------------------------------------


def test_html_fetches_nothing_but_the_images(renderer: Renderer) -> None:
    html = render(renderer, typical_week()).html
    assert "fonts.googleapis" not in html
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert '<meta name="color-scheme" content="light dark">' in html


def test_css_is_inlined_and_media_queries_survive(renderer: Renderer) -> None:
    html = render(renderer, typical_week()).html
    assert "@media only screen and (min-width:480px)" in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert re.search(r'<p class="meta" style="[^"]*font-size:14px', html)
    # Only the @media rules stay in a <style>; the ordinary rules went onto the elements.
    outside_comments = re.sub(r"<!--.*?-->", "", html, flags=re.S)  # Outlook's own styles
    for style in re.findall(r"<style[^>]*>(.*?)</style>", outside_comments, flags=re.S):
        assert style.strip().startswith("@media")


def test_text_is_at_least_14px(renderer: Renderer) -> None:
    html = render(renderer, typical_week()).html
    sizes = {int(size) for size in re.findall(r"font-size:\s*(\d+)px", html)}
    # 0px is MJML's whitespace trick between columns, 1px the hidden preheader.
    assert sizes - {0, 1} and min(sizes - {0, 1}) >= 14


def test_a_typical_week_stays_far_below_gmails_clip(renderer: Renderer) -> None:
    rendered = render(renderer, typical_week())
    assert rendered.size == len(rendered.html.encode("utf-8"))
    assert rendered.size < 60_000  # Gmail clips at 102 KB; a typical week must leave room


# --- the text part ----------------------------------------------------------------------------


def test_text_part_is_wrapped_and_says_what_the_html_says(renderer: Renderer) -> None:
    text = render(renderer, typical_week()).text
    for line in text.splitlines():
        assert len(line) <= 78 or re.fullmatch(r"(\[\d+\] )?(https?://|mailto:)\S+", line), line
    assert "- laarzen\n- een regenjas" in text
    assert "Meer op de website [1]." in text
    assert "[1] https://school.example/bos" in text
    assert "3 foto's staan in de HTML-versie van deze mail." in text
    assert "Wanneer: woensdag 2 december, 09:00–12:00\nWaar: Kagerbos" in text
    assert "<p>" not in text and "&amp;" not in text


_MARK = "\U000f0000mark\U000f0000"
_WORDS = st.sampled_from(
    ["Beste", "ouders,", "-", "1.", ">", "", "  ", "-- ", "ĳsbaan", "x" * 30, "\u00a0", _MARK]
)
_LINES = st.lists(st.lists(_WORDS, max_size=30).map(" ".join), max_size=12)


def wrap_line_by_line(text: str) -> str:
    """What _wrap must give: each line (as str.splitlines cuts them) wrapped on its own."""
    lines = [wrapped for line in text.splitlines() for wrapped in _wrapped(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


@given(_LINES, st.sampled_from(["\n", "\n\n\n", "\r\n", "\u2028"]))
def test_wrapping_equals_wrapping_each_line(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    assert _wrap(text) == wrap_line_by_line(text)


_PLAIN = st.text("abé", min_size=1, max_size=14)  # lengths that end words on column 72
_ODD = st.sampled_from(["x" * 80, "https://d.example/u/" + "t" * 60, "-", "1.", ">", "\u00a0", ""])


@given(st.lists(st.one_of(_PLAIN, _PLAIN, _PLAIN, _PLAIN, _ODD), min_size=1, max_size=40))
@example(["a" * 70, "b", "c" * 10])  # a word ending on column 72 stays on its line
@example(["a" * 70, "bb", "c"])  # one ending on 73 goes to the next
@example(["a" * 75, "b", "c" * 80, "d"])  # a word too long for a line has one of its own
def test_words_are_filled_as_textwrap_fills_them(words: list[str]) -> None:
    # The greedy fill (personal links, most lines of a post) against textwrap, which it
    # replaces where a line is plain words and single spaces.
    line = " ".join(words).rstrip()
    assert _wrap_words(line) == _textwrap_line(line)


@given(_LINES, st.sampled_from(["https://d.example/u/" + "t" * n for n in (5, 50, 90)]))
def test_a_page_wrapped_with_its_personal_lines_left_whole_wraps_as_the_filled_text(
    lines: list[str], url: str
) -> None:
    text = "\n".join(lines)
    pieces, personal = _wrap_page(text, _MARK)
    filled = "".join(
        "\n".join(_wrapped(piece.replace(_MARK, url))) if index in personal else piece
        for index, piece in enumerate(pieces)
    )
    assert filled == _wrap(text.replace(_MARK, url))


_TEXT = _LINES.map(lambda lines: "\n".join(lines).replace(_MARK, "m"))
_POST = st.tuples(
    st.integers(0, 3),
    st.lists(st.one_of(_TEXT, st.just(""), st.just("a\u2028b")), max_size=4),
    st.integers(0, 3),
).map(lambda post: "\n" * post[0] + "\n".join(post[1]) + "\n" * post[2])


@given(st.lists(st.tuples(_TEXT, _POST), max_size=4), _TEXT)
@example([("Groep 5\n=======", "\n\nTitel\n-----\n\n\n\nTekst\n\n")], "-- ")
def test_a_page_wrapped_around_its_posts_wraps_as_the_text_with_the_posts_in_place(
    parts: list[tuple[str, str]], end: str
) -> None:
    # Each post's text is wrapped once for every page that holds it; the page around it.
    posts: list[str] = []
    page = []
    for frame, post in parts:
        lines = _PostLines.of(post)
        if isinstance(lines, str):  # not on whole lines, or broken at more than "\n"
            page += [frame, lines]
        else:
            posts.append(lines.lines)
            number = len(posts) - 1
            page += [frame, "\n" * lines.lead + f"{_MARK}{number}{_MARK}" + "\n" * lines.trail]
    pieces, personal = _wrap_page("".join(page) + end, _MARK, posts)
    assert personal == ()
    assert "".join(pieces) == _wrap("".join(frame + post for frame, post in parts) + end)


def test_teacher_html_to_text() -> None:
    references: list[str] = ["https://already.example"]
    html = clean_teacher_html(
        "<h1>Kop</h1><div>Regel een</div><div>Regel twee</div>"
        '<ol><li>eerst</li><li>dan <a href="https://x.example/a">dit</a></li></ol>'
        "<blockquote><p>citaat</p></blockquote>"
        '<p><a href="mailto:juf@school.example">juf@school.example</a></p>'
    )
    text = teacher_html_to_text(html, references)
    assert text.splitlines() == [
        "Kop",
        "",
        "Regel een",
        "Regel twee",
        "",
        "1. eerst",
        "2. dan dit [2]",
        "",
        "> citaat",
        "",
        "juf@school.example",
    ]
    assert references == ["https://already.example", "https://x.example/a"]


# --- sanitising -------------------------------------------------------------------------------


def test_sanitize_drops_script_with_its_content() -> None:
    assert clean_teacher_html("<p>Hoi<script>alert(1)</script></p>") == "<p>Hoi</p>"
    assert "color" not in clean_teacher_html("<style>p{color:red}</style><p>Hoi</p>")


def test_sanitize_drops_event_handlers_and_unknown_tags_but_keeps_text() -> None:
    cleaned = clean_teacher_html(
        '<div onclick="x()"><span style="color:red">Rood</span> <img src=x onerror=y>en'
        " <strong>vet</strong></div>"
    )
    assert "onclick" not in cleaned and "onerror" not in cleaned and "style" not in cleaned
    assert "<img" not in cleaned and "<span" not in cleaned and "<div" not in cleaned
    assert "Rood" in cleaned and "<strong>vet</strong>" in cleaned


def test_sanitize_keeps_https_and_mailto_links_only() -> None:
    cleaned = clean_teacher_html(
        '<a href="javascript:alert(1)">a</a> <a href="https://ok.example/x">b</a>'
        ' <a href="mailto:juf@school.example">c</a> <a href="http://plain.example">d</a>'
        ' <a href="/relative">e</a>'
    )
    assert "javascript:" not in cleaned
    assert '<a href="https://ok.example/x" rel="noopener noreferrer">b</a>' in cleaned
    assert 'href="mailto:juf@school.example"' in cleaned
    assert "plain.example" not in cleaned and "/relative" not in cleaned
    assert all(letter in cleaned for letter in "abcde")  # the words stay


def test_sanitize_keeps_lines_of_dropped_containers_apart() -> None:
    cleaned = clean_teacher_html("<div>Regel een</div><div>Regel twee</div><h1>Titel</h1>")
    assert "Regel een<br>Regel twee" in cleaned
    assert "<h2>Titel</h2>" in cleaned


# --- headers ----------------------------------------------------------------------------------


def test_headers_parse_back_into_text_and_html(renderer: Renderer) -> None:
    rendered = render(renderer, typical_week())
    parsed = parse_back(rendered)
    assert parsed["Subject"] == "Nieuwsbrief De Schakel – week 48"
    assert parsed["From"].addresses[0].display_name == "De Schakel"
    assert parsed["From"].addresses[0].addr_spec == "nieuwsbrief@schakel.example"
    assert str(parsed["To"]) == "Fatma Yilmaz <f.yilmaz@example.org>"
    assert parsed["Reply-To"].addresses[0].addr_spec == "info@schakel.example"
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"].endswith("@schakel.example>")
    assert parsed["List-Id"] == '"De Schakel" <s1.digest.schakel.example>'
    assert parsed["List-Unsubscribe"] == (
        "<https://digest.schakel.example/unsubscribe/tok>, "
        "<mailto:info@schakel.example?subject=unsubscribe>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Content-Language"] == "nl"
    # The week has events: the alternatives come first in a multipart/mixed, then the .ics.
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, calendar = parsed.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert calendar.get_content_type() == "text/calendar"
    parts = list(alternative.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == rendered.text
    assert parts[1].get_content().replace("\r\n", "\n").rstrip("\n") == rendered.html


def test_long_unsubscribe_url_stays_intact(renderer: Renderer) -> None:
    url = "https://digest.schakel.example/unsubscribe/" + "a1B2" * 40
    rendered = render(renderer, make_content(unsubscribe_url=url))
    # Written with the stdlib's own SMTP policy too, as the deliver stage does.
    for raw in (rendered.message.as_bytes(), rendered.message.as_bytes(policy=email.policy.SMTP)):
        assert f"<{url}>".encode() in raw
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert f"<{url}>" in parsed["List-Unsubscribe"]


def test_no_unsubscribe_headers_without_a_url(renderer: Renderer) -> None:
    parsed = parse_back(render(renderer, make_content(unsubscribe_url=None)))
    assert parsed["List-Unsubscribe"] is None and parsed["List-Unsubscribe-Post"] is None


def test_recipient_display_name(renderer: Renderer) -> None:
    def to(*names: str) -> str:
        content = make_content(recipient_names=names, locale="en")
        return str(parse_back(render(renderer, content))["To"])

    assert to("Fatma Yilmaz", "Sem de Vries") == (
        "Fatma Yilmaz and Sem de Vries <f.yilmaz@example.org>"
    )
    assert to("A", "B", "C") == "f.yilmaz@example.org"


def test_names_cannot_inject_headers(renderer: Renderer) -> None:
    evil = "Fatma\r\nBcc: x@evil.example"
    content = make_content(
        recipient_names=(evil,),
        school=replace(make_content().school, name="De Schakel\r\nBcc: y@evil.example"),
        sections=(post_section(make_post(title="Hoi\r\nBcc: z@evil.example")),),
        kind="post",
        extra_headers={"X-Digest-Edition": "e1\r\nBcc: w@evil.example"},
    )
    rendered = render(renderer, content)
    headers = rendered.message.as_bytes().split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in headers
    parsed = parse_back(rendered)
    assert parsed.get_all("Bcc") is None
    assert len(parsed.get_all("To") or []) == 1
    assert [a.addr_spec for a in parsed["To"].addresses] == ["f.yilmaz@example.org"]
    assert parsed["X-Digest-Edition"] == "e1 Bcc: w@evil.example"


def test_extra_headers_are_added(renderer: Renderer) -> None:
    content = make_content(extra_headers={"X-Digest-Edition": "s1-2026-48"})
    assert parse_back(render(renderer, content))["X-Digest-Edition"] == "s1-2026-48"
    with pytest.raises(ValueError):
        render(renderer, make_content(extra_headers={"Content-Type": "text/plain"}))


def test_templates_path_is_the_repositorys_templates() -> None:
    assert templates_path() == Path(__file__).resolve().parent.parent / "templates"
    assert (templates_path() / "newsletter.mjml.j2").is_file()


def test_control_characters_in_imported_text_do_not_break_the_mail(renderer: Renderer) -> None:
    # A stray BEL or vertical tab from the portal used to make MJML refuse the whole mail.
    post = make_post(
        title="Bel\x07 en tab\x0b",
        body_html=clean_teacher_html("<p>Tekst\x07 met\x0b rare\x1f tekens</p>"),
        event=EventInfo(datetime(2026, 11, 27, 14, 0, tzinfo=AMS), None, "Gym\x07zaal"),
    )
    mail = renderer.render(make_content(post_section(post)), now=NOW)
    assert "Tekst met rare tekens" in mail.html
    assert "Gymzaal" in mail.html and "Gymzaal" in mail.text
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", mail.html + mail.text)
