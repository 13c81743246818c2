"""The compiled-once HTML equals the per-message pipeline's (Jinja → mjml-python → css-inline).

``Renderer.render`` renders a template whose MJML was compiled and CSS inlined at start-up;
``Renderer.reference_html`` does all three per message. They must give the same mail on the demo
week and on generated weeks: same elements, attributes (styles included) and text, once
whitespace runs are collapsed and character references decoded (Jinja writes ``&#39;`` where
the HTML serialiser of css-inline writes ``'``; a browser reads both as the same character).

The text part, which ``render`` puts together from a page and its posts each wrapped once, must
equal ``Renderer.reference_text``, the text rendered whole and wrapped at once, exactly.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from generate import CUTOFF, mail_contents, school_week

from digest.content import MailContent
from digest.demo import demo_document
from digest.render import Renderer, _part_content
from digest.settings import Settings

SETTINGS = Settings(mail_from="nieuwsbrief@schakel.example")
DEMO_CUTOFF = datetime(2026, 11, 27, 16, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


class _Canonical(HTMLParser):
    """A flat list of tags (attributes sorted, values decoded) and whitespace-collapsed text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[str] = []
        self._text: list[str] = []

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.items.append(text)
        self._text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        shown = " ".join(f'{k}="{" ".join((v or "").split())}"' for k, v in sorted(attrs))
        self.items.append(f"<{tag} {shown}>")

    def handle_endtag(self, tag: str) -> None:
        self._flush()
        self.items.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_comment(self, data: str) -> None:
        self._flush()
        self.items.append(f"<!--{' '.join(data.split())}-->")


def canonical(html: str) -> list[str]:
    parser = _Canonical()
    parser.feed(html)
    parser.close()
    parser._flush()
    return parser.items


def assert_same(renderer: Renderer, content: MailContent, now: datetime) -> None:
    mail = renderer.render(content, now=now)
    # The text part: each post's lines wrapped once for all its pages, against the whole text
    # wrapped at once; to the character.
    assert mail.text == renderer.reference_text(content, now=now), content.address
    fast = mail.html
    reference = renderer.reference_html(content, now=now)
    fast_items, reference_items = canonical(fast), canonical(reference)
    if fast_items != reference_items:
        pairs = zip(fast_items, reference_items, strict=False)
        shorter = min(len(fast_items), len(reference_items))
        at = next((i for i, (a, b) in enumerate(pairs) if a != b), shorter)
        context = slice(max(0, at - 3), at + 3)
        pytest.fail(
            f"{content.address}: compiled and per-message HTML differ at item {at}:\n"
            f"compiled:  {fast_items[context]}\nreference: {reference_items[context]}"
        )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def test_demo_week_is_the_same_either_way(renderer: Renderer) -> None:
    mails = mail_contents(demo_document(DEMO_CUTOFF), SETTINGS, cutoff=DEMO_CUTOFF)
    assert mails
    for content in mails:
        assert_same(renderer, content, DEMO_CUTOFF)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_generated_weeks_are_the_same_either_way(renderer: Renderer, seed: int) -> None:
    mails = mail_contents(school_week(seed, guardians=200), SETTINGS)
    assert len(mails) > 10
    for content in mails:
        assert_same(renderer, content, CUTOFF)


def test_per_post_mails_and_numbered_parts_are_the_same_either_way(renderer: Renderer) -> None:
    mails = mail_contents(school_week(6, guardians=120), SETTINGS)
    content = max(mails, key=lambda mail: mail.post_count)
    posts = [(section, post) for section in content.sections for post in section.posts]
    one = _part_content(content, posts[:1], 1, 1)
    assert_same(renderer, replace(one, kind="post", part=None, parts=None), CUTOFF)
    # A later part: a group continued from the part before, under its "(vervolg)" heading.
    assert_same(renderer, _part_content(content, posts[1:], 2, 2), CUTOFF)


def test_canonical_form_sees_a_difference() -> None:
    # The comparison is not vacuous: a changed style or text is a difference.
    assert canonical('<p style="margin:0">a  b</p>') == canonical("<p style='margin:0'>a\nb</p>")
    assert canonical('<p style="margin:0">a</p>') != canonical('<p style="margin:1px">a</p>')
    assert canonical("<p>&#39;</p>") == canonical("<p>'</p>")
