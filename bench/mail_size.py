"""How large the newsletter's HTML is: a typical week, and heavy weeks with the parts they need.

Prints the decoded HTML size of each mail (what Gmail measures against its clip of 102 KB) and
how long ``Renderer.render_parts`` took. The weeks are those of tests/test_render_size.py
(``tests/mail_weeks.py``): a typical week is 3 groups × 3 ordinary posts with a few photos each.

    /work/.venv/bin/python bench/mail_size.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the working tree's code and the weeks

from mail_weeks import HEAVY_WEEKS, NOW, SETTINGS, typical_week  # noqa: E402

from digest.content import MailContent  # noqa: E402
from digest.render import CLIP_BYTES, GMAIL_CLIP_BYTES, Renderer  # noqa: E402


def kib(size: int) -> str:
    return f"{size / 1024:5.1f} KiB"


def main() -> None:
    renderer = Renderer(SETTINGS)
    print(f"Gmail clips at {GMAIL_CLIP_BYTES} bytes; a part may hold {CLIP_BYTES}.")
    for locale in ("nl", "en"):
        mail = renderer.render(typical_week(locale), now=NOW)
        print(f"typical week ({locale}): {kib(mail.size)} HTML, {kib(len(mail.text))} text")
    weeks: dict[str, MailContent] = {name: build() for name, build in HEAVY_WEEKS.items()}
    for name, content in weeks.items():
        started = time.perf_counter()
        parts = renderer.render_parts(content, now=NOW)
        took = time.perf_counter() - started
        whole = renderer.render(content, now=NOW).size
        sizes = ", ".join(kib(part.size) for part in parts)
        print(f"{name}: whole {kib(whole)} -> {len(parts)} part(s): {sizes} ({took:.2f} s)")


if __name__ == "__main__":
    main()
