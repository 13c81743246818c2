"""PNG screenshots of a guardian's newsletter, phone and desktop, light and dark, per language.

    python scripts/screenshots.py [--guardian ID] [--lang nl|en|both] [--out DIR] [--at T]

Without DIGEST_DATABASE_URL it loads the demo school into a temporary SQLite file and takes the
largest newsletter of the demo week; with it, it reads that database (``--guardian`` needed).
The mail is rendered as ``digest preview`` renders it, in each language asked for (the guardian's
own locale is overridden), and shown in the machine's Chromium (/usr/bin/chromium) with every
image served by a local stand-in for the media endpoint; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The working tree's code and the tests' browser helpers, however the package is installed.
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from mail_browser import DESKTOP, PHONE, ColorScheme, launch_chromium, mail_viewer  # noqa: E402
from media_standin import media_standin  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from digest.db import make_engine, session_factory  # noqa: E402
from digest.demo import SCHOOL_ID, ZONE, run_demo  # noqa: E402
from digest.errors import DigestError  # noqa: E402
from digest.links import Links  # noqa: E402
from digest.periods import latest_cutoff, parse_instant  # noqa: E402
from digest.plan import load_school  # noqa: E402
from digest.preview import preview  # noqa: E402
from digest.render import Renderer  # noqa: E402
from digest.settings import Settings, load_settings  # noqa: E402
from digest.status import edition_status, find_edition  # noqa: E402

DEMO_AT = "2026-11-27T17:00"  # the week the tests use: the same mail every run
WIDTHS = {"phone": PHONE, "desktop": DESKTOP}
SCHEMES: tuple[ColorScheme, ...] = ("light", "dark")


def main(argv: list[str] | None = None) -> int:
    """Write the screenshots and print their paths; 1 with a message when it cannot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guardian", help="guardian id (default: the demo's largest newsletter)")
    parser.add_argument("--lang", choices=["nl", "en", "both"], default="both")
    parser.add_argument("--out", type=Path, help="directory for the PNGs (default: a new temp dir)")
    parser.add_argument("--at", help=f"ISO-8601; the edition at or before it (demo: {DEMO_AT})")
    parser.add_argument("--scale", type=float, default=1, help="device pixel ratio (default: 1)")
    args = parser.parse_args(argv)

    languages = ["nl", "en"] if args.lang == "both" else [args.lang]
    own_database = "DIGEST_DATABASE_URL" in os.environ
    if own_database and not args.guardian:
        parser.error("--guardian is needed with DIGEST_DATABASE_URL")

    with media_standin() as standin, tempfile.TemporaryDirectory() as scratch:
        overrides: dict[str, object] = {"base_url": standin.base_url}
        if not own_database:
            overrides |= {
                "database_url": f"sqlite:///{Path(scratch) / 'demo.db'}",
                "mail_url": "null://",
            }
        settings = load_settings(**overrides)
        if args.at or not own_database:
            at = parse_instant(args.at or DEMO_AT, ZONE)  # without an offset: Amsterdam time
        else:
            at = datetime.now(UTC)
        engine = make_engine(settings.database_url)
        try:
            if not own_database:
                run_demo(engine, settings, at, echo=lambda _line: None)
            guardian = args.guardian or largest_newsletter(engine, at)
            htmls = render(engine, settings, guardian, at, languages)
        except DigestError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        out: Path = args.out or Path(tempfile.mkdtemp(prefix="digest-screenshots-"))
        out.mkdir(parents=True, exist_ok=True)
        for language, html in htmls.items():
            page = out / f"{guardian}-{language}.html"
            page.write_text(html, encoding="utf-8")
            print(page)
            for path in screenshots(html, out / f"{guardian}-{language}", args.scale):
                print(path)
    return 0


def screenshots(html: str, stem: Path, scale: float) -> list[Path]:
    """Full-page PNGs of ``html`` at each width in each colour scheme, named after ``stem``."""
    paths = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for device, width in WIDTHS.items():
                for scheme in SCHEMES:
                    path = stem.with_name(f"{stem.name}-{device}-{width}-{scheme}.png")
                    with mail_viewer(
                        browser, width=width, color_scheme=scheme, scale=scale
                    ) as viewer:
                        traffic = viewer.show(html)
                        viewer.page.screenshot(path=str(path), full_page=True)
                    for url in traffic.refused:
                        print(
                            f"warning: refused a request outside 127.0.0.1: {url}", file=sys.stderr
                        )
                    paths.append(path)
        finally:
            browser.close()
    return paths


def largest_newsletter(engine: Engine, at: datetime) -> str:
    """The demo guardian whose newsletter of the week is the largest: the most to look at."""
    sessions = session_factory(engine)
    with sessions() as session:
        school = load_school(session, SCHOOL_ID)
        cutoff = latest_cutoff(
            at, weekday=school.digest_weekday, clock=school.digest_time, zone=school.timezone
        )
        edition = find_edition(session, SCHOOL_ID, cutoff)
        assert edition is not None, "the demo planned no edition"
        sent = [line for line in edition_status(session, edition) if line.status == "sent"]
    return max(sent, key=lambda line: line.size or 0).guardian_id


def render(
    engine: Engine, settings: Settings, guardian: str, at: datetime, languages: list[str]
) -> dict[str, str]:
    """The guardian's mail of the edition at ``at`` as HTML, once per language."""
    sessions = session_factory(engine)
    with sessions() as session:
        result = preview(session, Links(settings), guardian, at=at)
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    renderer = Renderer(settings)
    return {
        language: renderer.render(replace(result.content, locale=language), now=at).html
        for language in languages
    }


if __name__ == "__main__":
    sys.exit(main())
