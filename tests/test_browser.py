"""The HTML part as a parent's phone and a desktop show it: real Chromium, no network but ours.

Images come from a local stand-in for the media endpoint (``media_standin``), so the mail lays
out as it does with real photos; any request that would leave 127.0.0.1 is refused and counted.
"""

from __future__ import annotations

import email
import hashlib
import mailbox
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from conftest import cli_environment
from mail_browser import DESKTOP, PHONE, MailViewer, is_local, launch_chromium, mail_viewer
from mail_samples import NOW, heavy_week
from media_standin import MediaStandIn, media_standin
from playwright.sync_api import Browser, sync_playwright

from digest.links import Links
from digest.render import Renderer
from digest.settings import Settings

AT = "2026-11-27T17:00"  # an hour after the demo week's cutoff, Amsterdam time
WIDTHS = (PHONE, DESKTOP)

# Every element's box, the images, and the document's width, measured in the page.
MEASURE = """() => {
  const boxes = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;  // not rendered (display:none, empty)
    const text = (el.innerText || el.getAttribute('alt') || '').trim().slice(0, 60);
    boxes.push({what: el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''),
                left: r.left, right: r.right, text});
  }
  return {
    scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    boxes,
    images: [...document.images].map(img => ({
      src: img.src, alt: img.getAttribute('alt'), loaded: img.complete && img.naturalWidth > 0,
    })),
  };
}"""


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
def settings(standin: MediaStandIn) -> Settings:
    return Settings(base_url=standin.base_url, mail_from="nieuwsbrief@klimop.example")


def _layout_key(html: str) -> str:
    # Mails that differ only in their signed tokens lay out alike: one of each is enough.
    return hashlib.sha256(re.sub(r'(href|src)="[^"]*"', "", html).encode()).hexdigest()


@pytest.fixture(scope="module")
def demo_mails(tmp_path_factory: pytest.TempPathFactory, standin: MediaStandIn) -> dict[str, str]:
    """The HTML part of each differently laid-out mail of the demo week, by its address."""
    where = tmp_path_factory.mktemp("demo")
    environment = cli_environment(
        DIGEST_DATABASE_URL=f"sqlite:///{where / 'digest.db'}",
        DIGEST_MAIL_URL=f"maildir://{where / 'outbox'}",
        DIGEST_BASE_URL=standin.base_url,
    )
    result = subprocess.run(
        [sys.executable, "-m", "digest", "demo", "--at", AT],
        cwd=where,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    box = mailbox.Maildir(where / "outbox", create=False)
    mails: dict[str, str] = {}
    seen: set[str] = set()
    for key in sorted(box.iterkeys()):
        message = email.message_from_bytes(box.get_bytes(key), policy=default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(("html",))
        assert part is not None
        html = part.get_content()
        if _layout_key(html) not in seen:
            seen.add(_layout_key(html))
            mails[message["To"].addresses[0].addr_spec] = html
    return mails


@pytest.fixture(scope="module")
def heavy_mails(settings: Settings) -> dict[str, str]:
    """The heavy week rendered directly: a newsletter in each language and a per-post mail."""
    renderer = Renderer(settings)
    links = Links(settings)
    nl, en = heavy_week(links, "nl"), heavy_week(links, "en")
    single = replace(nl, kind="post", sections=nl.sections[:1])
    return {
        name: renderer.render(content, now=NOW).html
        for name, content in (("heavy-nl", nl), ("heavy-en", en), ("heavy-post", single))
    }


def check_page(viewer: MailViewer, width: int) -> list[str]:
    """What is wrong with the mail just shown at ``width``: overflow, alt text, images, traffic."""
    measured: dict[str, Any] = viewer.page.evaluate(MEASURE)
    problems = []
    if measured["scrollWidth"] > width:
        problems.append(f"the document is {measured['scrollWidth']} px wide")
    for box in measured["boxes"]:
        # Half a pixel for subpixel layout.
        if box["right"] > width + 0.5 or box["left"] < -0.5:
            problems.append(
                f"{box['what']} spans {box['left']:.0f}–{box['right']:.0f} px: {box['text']!r}"
            )
    for image in measured["images"]:
        if not (image["alt"] or "").strip():
            problems.append(f"<img> without alt text: {image['src']}")
        if not image["loaded"]:
            problems.append(f"<img> did not load: {image['src']}")
    traffic = viewer.traffic
    remote = traffic.refused + [url for url in traffic.requested if not is_local(url)]
    problems += [f"request left 127.0.0.1: {url}" for url in remote]
    return problems


@pytest.mark.parametrize("width", WIDTHS)
def test_every_mail_fits_the_screen_and_stays_local(
    browser: Browser,
    demo_mails: dict[str, str],
    heavy_mails: dict[str, str],
    width: int,
) -> None:
    assert len(demo_mails) > 5
    assert any("<img" in html for html in demo_mails.values())  # some carry photos
    problems: dict[str, list[str]] = {}
    with mail_viewer(browser, width=width) as viewer:
        for name, html in {**demo_mails, **heavy_mails}.items():
            viewer.show(html)
            found = check_page(viewer, width)
            if found:
                problems[name] = found
    assert not problems


def test_the_heavy_mail_shows_six_thumbnails_from_the_media_endpoint(
    browser: Browser, heavy_mails: dict[str, str], standin: MediaStandIn
) -> None:
    with mail_viewer(browser, width=PHONE) as viewer:
        traffic = viewer.show(heavy_mails["heavy-nl"])
        images = viewer.page.evaluate(
            "[...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().width])"
        )
    assert len(images) == 6
    # Full-size photos, shown as thumbnails that three fit side by side on a phone.
    assert all(natural == 1200 and 0 < shown <= (PHONE - 48) / 3 for natural, shown in images)
    assert len(traffic.requested) == 6
    assert all(url.startswith(f"{standin.base_url}/media/") for url in traffic.requested)


def test_a_request_to_anywhere_else_is_refused(browser: Browser, standin: MediaStandIn) -> None:
    # The guard itself: a remote image, font and stylesheet are refused, ours are served.
    html = (
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<img alt="remote" src="https://portal.example/media/1.jpg">'
        f'<img alt="ours" src="{standin.base_url}/media/x">'
    )
    with mail_viewer(browser, width=PHONE) as viewer:
        traffic = viewer.show(html)
        loaded = viewer.page.evaluate("[...document.images].map(i => i.naturalWidth > 0)")
    assert loaded == [False, True]
    assert sorted(traffic.refused) == [
        "https://fonts.googleapis.com/css?family=Roboto",
        "https://portal.example/media/1.jpg",
    ]


def test_the_checks_see_what_sticks_out(browser: Browser, standin: MediaStandIn) -> None:
    # The guard itself: an unbreakable word in a table cell, an image too wide, one without alt.
    html = (
        f"<table><tr><td>{'x' * 120}</td></tr></table>"
        f'<img src="{standin.base_url}/media/wide" width="500" alt="Te breed">'
        f'<img src="{standin.base_url}/media/bare" width="50">'
    )
    with mail_viewer(browser, width=PHONE) as viewer:
        viewer.show(html)
        problems = check_page(viewer, PHONE)
    assert any(problem.startswith("the document is") for problem in problems)
    assert any(problem.startswith("td spans") for problem in problems)
    assert any(problem.startswith("img spans") and "Te breed" in problem for problem in problems)
    assert any(problem.startswith("<img> without alt text") for problem in problems)
