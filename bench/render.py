"""Newsletters rendered per second per core: our compile-once path against per-message pipelines.

    /work/.venv/bin/python bench/render.py [--schools 4] [--guardians 1400] [--rounds 5] [--quick]

The mails are a generated board's newsletters (bench/generate.py: every queued newsletter of each
school's week, composed from a scratch SQLite store as sending would). Each contender renders the
same mails, HTML and text part, in this one process; the figure is mails per CPU second of this
process (``time.process_time``), which is what one core does whatever else the machine runs; the
wall-clock rate is printed beside it. Contenders:

* ``compiled``: ``Renderer.html_and_text``, one Jinja render of the template compiled at start-up,
  as an edition renders: every round a fresh renderer renders each mail once, so each post and
  each page (the mail of one mix of posts, shared by the parents who get that mix) is rendered
  once per round and reused for the mails that carry it; a last round on a renderer that has
  already seen every mail (all pages cached) is reported apart, as an upper bound;
* ``mjml+css-inline``: ``Renderer.reference_html`` per message (Jinja → mjml-python → css-inline),
  what ``render`` did before, plus the text part rendered whole for each mail (no page cache);
* ``naive``: Jinja → mjml-python → premailer per message (premailer: ``pip install '.[bench]'``,
  never fetching anything), plus the same text part.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from generate import CUTOFF, board, mail_contents  # noqa: E402

from digest.content import MailContent  # noqa: E402
from digest.render import Renderer  # noqa: E402
from digest.settings import Settings  # noqa: E402


def premailer_inline(html: str) -> str:
    """premailer with the network and the file system off: only the page's own <style>."""
    import premailer

    return str(
        premailer.Premailer(
            html,
            allow_network=False,
            allow_loading_external_files=False,
            disable_link_rewrites=True,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    )


def measure(
    name: str,
    mails: list[MailContent],
    rounds: int,
    render: Callable[[int], Callable[[MailContent], object]],
) -> tuple[float, float]:
    """(mails per CPU second, mails per wall second) over ``rounds`` passes of ``mails``;
    ``render(n)`` is what renders a mail in pass ``n``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for number in range(rounds):
        one = render(number)
        for content in mails:
            one(content)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = rounds * len(mails)
    print(
        f"  {name:<18} {done:6d} mails  {done / cpu:8.1f}/s per core (CPU)  "
        f"{done / wall:8.1f}/s wall  {1000 * cpu / done:7.2f} ms per mail",
        flush=True,
    )
    return done / cpu, done / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schools", type=int, default=4)
    parser.add_argument("--guardians", type=int, default=1400, help="in all")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5, help="passes of the compiled path")
    parser.add_argument("--naive-mails", type=int, default=60, help="mails the naive path renders")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.schools, args.guardians, args.rounds, args.naive_mails = 1, 300, 2, 8

    settings = Settings()
    mails = mail_contents(board(args.schools, args.guardians, seed=args.seed), settings)
    posts = {post.id for mail in mails for section in mail.sections for post in section.posts}
    size = sum(len(mail.sections) for mail in mails) / max(len(mails), 1)
    print(
        f"{len(mails)} newsletters of {args.schools} school(s) ({len(posts)} posts, "
        f"{size:.1f} groups per mail); load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    started = time.perf_counter()
    # The per-message contenders' text part: rendered whole for every mail, as before pages.
    whole = Renderer(settings, pages_cached=0)
    print(f"  renderer start-up (compiles nl and en): {time.perf_counter() - started:.2f} s")
    # One renderer per pass, made before the clock starts: each pass renders like an edition.
    fresh = [Renderer(settings) for _ in range(args.rounds)]

    def ours(on: Renderer) -> Callable[[MailContent], object]:
        return lambda content: on.html_and_text(content, now=CUTOFF)

    def per_message(inline: Callable[[str], str] | None) -> Callable[[int], Callable[..., object]]:
        def render(content: MailContent) -> object:
            html = whole.reference_html(content, now=CUTOFF, inline=inline)
            return html, whole.html_and_text(content, now=CUTOFF)[2]

        return lambda _number: render

    compiled, _ = measure("compiled", mails, args.rounds, lambda number: ours(fresh[number]))
    # Every page kept and rendered beforehand: what a mail costs once its page exists.
    cached = Renderer(settings, pages_cached=len(mails))
    for content in mails:
        cached.html_and_text(content, now=CUTOFF)
    measure("compiled, all cached", mails, 1, lambda _number: ours(cached))
    subset = mails[: args.naive_mails]
    inlined, _ = measure("mjml+css-inline", subset, 1, per_message(None))
    try:
        naive, _ = measure("naive (premailer)", subset, 1, per_message(premailer_inline))
    except ImportError:
        print("  naive: premailer is not installed (pip install '.[bench]')")
        naive = 0.0
    print(f"compiled / mjml+css-inline: {compiled / inlined:.1f}x")
    if naive:
        print(f"compiled / naive:           {compiled / naive:.1f}x   (target >= 40x)")
    print(f"compiled per core:          {compiled:.0f}/s  (target >= 1,000/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
