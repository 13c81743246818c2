"""A mail's HTML part in headless Chromium, the machine's own, with no way out but 127.0.0.1.

Playwright is only the driver: we pass Debian's ``/usr/bin/chromium`` and never let Playwright
fetch a browser build of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Playwright, Route

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it where it is missing
LOCAL_HOST = "127.0.0.1"
PHONE, DESKTOP = 375, 600  # an iPhone SE/mini's CSS width; the mail's own design width
ColorScheme = Literal["light", "dark"]

# Besides routing every page request, the browser itself cannot resolve any host but ours:
# background fetches that never reach a route fail too.
_ARGS = [
    "--no-sandbox",
    f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {LOCAL_HOST}",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-pings",
]


def launch_chromium(playwright: Playwright) -> Browser:
    """The machine's headless Chromium; Playwright downloads nothing."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS, headless=True)


@dataclass
class Traffic:
    """Every URL the page asked for, and those refused because they left 127.0.0.1."""

    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def is_local(url: str) -> bool:
    """True for a URL on 127.0.0.1, or one that needs no network (data:, about:)."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "about") or parts.hostname == LOCAL_HOST


class MailViewer:
    """One page of a given width and colour scheme; ``show`` loads a mail into it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.traffic = Traffic()
        page.context.route("**/*", self._route)
        page.on("request", lambda request: self.traffic.requested.append(request.url))

    def show(self, html: str) -> Traffic:
        """Load ``html``, images and all; what it asked for (a new page is slower to make)."""
        self.traffic = Traffic()
        self.page.set_content(html, wait_until="load")
        return self.traffic

    def _route(self, route: Route) -> None:
        url = route.request.url
        if is_local(url):
            route.continue_()
        else:
            self.traffic.refused.append(url)
            route.abort("blockedbyclient")


@contextmanager
def mail_viewer(
    browser: Browser, *, width: int, color_scheme: ColorScheme = "light", scale: float = 1
) -> Iterator[MailViewer]:
    """A fresh page ``width`` CSS pixels wide, every request outside 127.0.0.1 refused."""
    context = browser.new_context(
        viewport={"width": width, "height": 800},
        device_scale_factor=scale,
        color_scheme=color_scheme,
    )
    context.set_default_timeout(15_000)
    try:
        yield MailViewer(context.new_page())
    finally:
        context.close()
