"""The mail's colours as a reader's browser computes them, light and dark, held to WCAG 2.x AA.

Every visible piece of text is measured against the background it is painted on (the nearest
ancestor with a background colour), so the check follows the template's real cascade: inlined
styles, MJML's attributes and the ``prefers-color-scheme: dark`` rules with ``!important``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mail_browser import DESKTOP, ColorScheme, launch_chromium, mail_viewer
from mail_samples import LOCATION, LONG_WORD, NOW, heavy_week
from media_standin import MediaStandIn, media_standin
from playwright.sync_api import Browser, sync_playwright

from digest.content import MailContent
from digest.i18n import translations
from digest.links import Links
from digest.render import Renderer, templates_path
from digest.settings import Settings

AA = 4.5  # WCAG 2.x 1.4.3 for body text; we hold headings to it as well
RGB = tuple[float, float, float]
SCHEMES: tuple[ColorScheme, ...] = ("light", "dark")
LOCALES = ("nl", "en")
# What a parent reads, as reader_roles finds it in the heavy week.
ROLES = (
    "school name", "mail title", "group heading", "post title", "meta line", "body heading",
    "body text", "body link", "video label", "note", "note link", "box label", "box text",
    "box link", "link list", "link domain", "footer text", "footer link",
)  # fmt: skip

# Pairs under AA today, for the template's owner to fix. The mark is strict: once the colours
# pass it fails, so that it is removed rather than left to hide a later regression.
# (scheme, role) pairs the template is known to fail, with why; strict: a fix must remove them.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

# Each visible text node: its words, element, computed colour, and the background colours of
# its element and ancestors up to the first opaque one.
MEASURE = """() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    const text = node.textContent.replace(/\\s+/g, ' ').trim();
    if (!text) continue;
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const backgrounds = [];
    for (let at = el; at; at = at.parentElement) {
      const colour = getComputedStyle(at).backgroundColor;
      backgrounds.push(colour);
      if (colour.startsWith('rgb(')) break;  // opaque: nothing beneath shows through
    }
    found.push({text, tag: el.tagName.toLowerCase(), colour: getComputedStyle(el).color,
                backgrounds});
  }
  return found;
}"""


def reader_roles(content: MailContent, locale: str) -> dict[str, re.Pattern[str]]:
    """What a parent reads in the heavy week, by the words it shows (markup and classes change).

    A piece of text takes the first role whose pattern it matches in full.
    """
    catalogue = translations(locale, templates_path() / "locale")
    _, n_ = catalogue.gettext, catalogue.ngettext
    posts = [post for section in content.sections for post in section.posts]
    school = content.school.name
    why = _("You receive this newsletter because you get the news of %(school)s by email.")

    def exactly(*texts: str) -> re.Pattern[str]:
        return re.compile("|".join(map(re.escape, texts)))

    def starting(*texts: str) -> re.Pattern[str]:
        return re.compile(f"(?:{'|'.join(map(re.escape, texts))}).*")

    return {
        "school name": exactly(school),
        "mail title": exactly(_("Newsletter – week %(week)d") % {"week": content.week}),
        "group heading": exactly(*(section.name for section in content.sections)),
        "post title": exactly(*(post.title for post in posts)),
        "meta line": starting(*(f"{post.author} · " for post in posts)),
        "body heading": exactly(f"Belangrijk: de {LONG_WORD}", "Meenemen", "Tot slot"),
        "body text": starting("Beste ouders", "Wie niet waagt", "laarzen", "Groeten"),
        "body link": exactly("het formulier"),
        "video label": starting("▶"),
        "note": exactly(
            n_("%(num)d photo is only in the portal", "%(num)d photos are only in the portal", 2)
            % {"num": 2},
            n_("%(num)d more photo", "%(num)d more photos", 3) % {"num": 3},
        ),
        "note link": exactly(_("View in the portal")),
        "box label": exactly(f"{_('When')}:", f"{_('Where')}:", f"{_('Help wanted')}:"),
        "box text": starting(LOCATION, "Drie ouders"),
        "box link": exactly(_("I can help"), _("Choose a time")),
        "link list": exactly("Het museum", "Rekenweb: oefenen met de tafels"),
        "link domain": re.compile(
            r"\(?(natuurmuseumflevolandnoordoostpolder|rekenweb)\.nl\)?|\(portal\.example\)"
        ),
        "footer text": starting(why % {"school": school}),
        "footer link": exactly(_("Mail settings"), _("Unsubscribe")),
    }


def role_of(text: str, roles: dict[str, re.Pattern[str]]) -> str | None:
    return next((name for name, words in roles.items() if words.fullmatch(text)), None)


@dataclass(frozen=True)
class TextPair:
    """One piece of text as painted: its colour, its background and their contrast ratio."""

    role: str
    locale: str
    text: str
    foreground: str
    background: str
    ratio: float

    def __str__(self) -> str:
        colours = f"{self.foreground} on {self.background}"
        return f"{self.role}: {colours} = {self.ratio:.2f}:1 {self.text!r}"


def parse_colour(css: str) -> tuple[RGB, float]:
    """``rgb(r, g, b)`` or ``rgba(r, g, b, a)`` as computed by the browser."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)]
    if not css.startswith("rgb") or len(numbers) not in (3, 4):
        raise ValueError(f"unexpected computed colour {css!r}")
    return (numbers[0], numbers[1], numbers[2]), numbers[3] if len(numbers) == 4 else 1.0


def over(top: RGB, alpha: float, bottom: RGB) -> RGB:
    """``top`` at ``alpha`` painted over opaque ``bottom``."""
    return tuple(t * alpha + b * (1 - alpha) for t, b in zip(top, bottom, strict=True))  # type: ignore[return-value]


def luminance(rgb: RGB) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (channels 0–255)."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: RGB, other: RGB) -> float:
    """WCAG 2.x contrast ratio, from 1 (none) to 21 (black on white)."""
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def hex_colour(rgb: RGB) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def text_pair(measured: dict[str, Any], role: str, locale: str, canvas: RGB) -> TextPair:
    """Composite the backgrounds from the canvas up, then the text colour over the result."""
    background = canvas
    for css in reversed(measured["backgrounds"]):
        rgb, alpha = parse_colour(css)
        background = over(rgb, alpha, background)
    rgb, alpha = parse_colour(measured["colour"])
    foreground = over(rgb, alpha, background)
    return TextPair(
        role=role,
        locale=locale,
        text=measured["text"],
        foreground=hex_colour(foreground),
        background=hex_colour(background),
        ratio=contrast(foreground, background),
    )


@pytest.fixture(scope="module")
def standin() -> Iterator[MediaStandIn]:
    with media_standin() as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def contents(standin: MediaStandIn) -> dict[str, MailContent]:
    """The heavy week, which holds every kind of block, in each language."""
    links = Links(Settings(base_url=standin.base_url))
    return {locale: heavy_week(links, locale) for locale in LOCALES}


@pytest.fixture(scope="module")
def mails(standin: MediaStandIn, contents: dict[str, MailContent]) -> dict[str, str]:
    renderer = Renderer(Settings(base_url=standin.base_url))
    return {locale: renderer.render(content, now=NOW).html for locale, content in contents.items()}


@pytest.fixture(scope="module")
def painted(
    browser: Browser, contents: dict[str, MailContent], mails: dict[str, str]
) -> dict[ColorScheme, list[TextPair]]:
    """Every visible piece of text of the heavy week in each language, per colour scheme."""
    pairs: dict[ColorScheme, list[TextPair]] = {}
    for scheme in SCHEMES:
        # Chromium's canvas where nothing paints a background (the mail's meta tag allows
        # both schemes); the mail paints its own, so this only shows in a failing check.
        canvas: RGB = (255, 255, 255) if scheme == "light" else (18, 18, 18)
        pairs[scheme] = []
        with mail_viewer(browser, width=DESKTOP, color_scheme=scheme) as viewer:
            for locale, html in mails.items():
                roles = reader_roles(contents[locale], locale)
                assert tuple(roles) == ROLES
                viewer.show(html)
                for measured in viewer.page.evaluate(MEASURE):
                    role = role_of(measured["text"], roles) or f"other <{measured['tag']}>"
                    pairs[scheme].append(text_pair(measured, role, locale, canvas))
    return pairs


def _role_cases() -> Iterator[Any]:
    for scheme in SCHEMES:
        for role in ROLES:
            reason = KNOWN_FAILURES.get((scheme, role))
            marks = [pytest.mark.xfail(reason=f"template: {reason}", strict=True)] if reason else []
            yield pytest.param(scheme, role, marks=marks, id=f"{scheme}-{role.replace(' ', '_')}")


@pytest.mark.parametrize(("scheme", "role"), list(_role_cases()))
def test_text_contrast_meets_aa(
    painted: dict[ColorScheme, list[TextPair]], scheme: ColorScheme, role: str
) -> None:
    pairs = [pair for pair in painted[scheme] if pair.role == role]
    assert {pair.locale for pair in pairs} == set(LOCALES), f"no {role} found: see reader_roles"
    assert not {str(pair) for pair in pairs if pair.ratio < AA}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_other_text_meets_aa_too(
    painted: dict[ColorScheme, list[TextPair]], scheme: ColorScheme
) -> None:
    # The overview, the table's words, a long URL as a link: whatever has no role of its own.
    others = [pair for pair in painted[scheme] if pair.role not in ROLES]
    assert len(others) >= 4
    assert not {str(pair) for pair in others if pair.ratio < AA}


def test_dark_mode_changes_the_colours(painted: dict[ColorScheme, list[TextPair]]) -> None:
    # Guards the emulation itself: a browser ignoring prefers-color-scheme would pass the
    # dark checks with the light colours.
    light = {pair.background for pair in painted["light"]}
    dark = {pair.background for pair in painted["dark"]}
    assert "#ffffff" in light and "#ffffff" not in dark


@pytest.mark.parametrize(
    ("one", "other", "ratio"),
    [((0, 0, 0), (255, 255, 255), 21.0), ((255, 255, 255), (255, 255, 255), 1.0),
     ((118, 118, 118), (255, 255, 255), 4.54), ((0, 0, 255), (255, 255, 255), 8.59)],
)  # fmt: skip
def test_contrast_formula(one: RGB, other: RGB, ratio: float) -> None:
    assert contrast(one, other) == pytest.approx(ratio, abs=0.01)


def test_the_mail_fetches_no_font_script_or_stylesheet(
    browser: Browser, mails: dict[str, str], standin: MediaStandIn
) -> None:
    for html in mails.values():
        lowered = html.lower()
        assert "<script" not in lowered
        assert not re.search(r"<link\b[^>]*stylesheet", lowered)
        assert "@import" not in lowered and "@font-face" not in lowered
        assert "fonts.googleapis" not in lowered and "fonts.gstatic" not in lowered
        with mail_viewer(browser, width=DESKTOP) as viewer:
            traffic = viewer.show(html)
            loaded = viewer.page.evaluate(
                """() => ({
                  sheets: [...document.styleSheets].map(sheet => sheet.href),
                  scripts: document.scripts.length,
                  fonts: [...document.fonts].length,
                })"""
            )
        assert loaded == {"sheets": [None], "scripts": 0, "fonts": 0}
        # Only the photos were fetched, all from the media endpoint.
        assert traffic.requested and not traffic.refused
        assert all(url.startswith(f"{standin.base_url}/media/") for url in traffic.requested)
