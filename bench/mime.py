"""Milliseconds to build a 60 KB newsletter's message: the stdlib's EmailMessage against ours.

    /work/.venv/bin/python bench/mime.py [--kb 60] [--repeat 200] [--quick]

Both get the same rendered parts (HTML, text, a calendar) and headers and end in the bytes
handed to SMTP: ``EmailMessage`` built as ``digest.render`` did before (header objects,
``set_content`` with quoted-printable, ``as_bytes`` with the SMTP policy), against
``Renderer.message_bytes`` (digest/mime.py, written directly): once with every byte encoded, and
once as the renderer hands the parts over in an edition, where the page's pieces (all but the
mail's two links) were encoded once for every mail of its mix of posts. CPU time of this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from mail_weeks import NOW, SETTINGS, make_content, make_post, photos  # noqa: E402

from digest.calendar import attachment_name, mail_calendar  # noqa: E402
from digest.content import EventInfo, GroupSection, MailContent  # noqa: E402
from digest.render import MAIL_POLICY, Renderer, _list_id  # noqa: E402


def newsletter(kb: int, renderer: Renderer) -> MailContent:
    """A week with an event whose HTML is just over ``kb`` KB."""
    posts = [make_post("e0", event=EventInfo(NOW.replace(day=30), None, "Gymzaal"))]
    while True:
        content = make_content(GroupSection("g5", "Groep 5", "class", tuple(posts)))
        if renderer.render(content, now=NOW).size >= kb * 1000:
            return content
        posts.append(make_post(f"p{len(posts)}", photos=photos(f"p{len(posts)}", 3)))


def stdlib_message(
    content: MailContent, subject: str, text: str, html: str, now: datetime, message_id: str
) -> bytes:
    """The message as EmailMessage builds it (what digest.render did before digest.mime)."""
    school = content.school.name
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = subject
    message["From"] = Address(display_name=school, addr_spec=SETTINGS.mail_from)
    names = " en ".join(content.recipient_names)
    message["To"] = Address(display_name=names, addr_spec=content.address)
    if content.school.reply_to:
        message["Reply-To"] = Address(display_name=school, addr_spec=content.school.reply_to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message["List-Id"] = _list_id(school, content.school.id, SETTINGS.mail_domain)
    if content.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{content.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["MIME-Version"] = "1.0"
    calendar = mail_calendar(content, SETTINGS, now=now)
    alternative = message if calendar is None else EmailMessage(policy=MAIL_POLICY)
    if calendar is not None:
        message.make_mixed()
    alternative.make_alternative()
    message["Content-Language"] = content.locale
    for body, subtype in ((text, "plain"), (html, "html")):
        part = EmailMessage(policy=MAIL_POLICY)
        part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
        del part["MIME-Version"]
        alternative.attach(part)
    if calendar is not None:
        message.attach(alternative)
        name = attachment_name(content.locale)
        part = EmailMessage(policy=MAIL_POLICY)
        part.set_content(
            calendar,
            maintype="text",
            subtype="calendar",
            cte="base64",
            disposition="attachment",
            filename=name,
            params={"method": "PUBLISH", "charset": "utf-8", "name": name},
        )
        del part["MIME-Version"]
        message.attach(part)
    return message.as_bytes(policy=SMTP)


def measure(name: str, repeat: int, build: Callable[[], bytes]) -> float:
    build()
    started = time.process_time()
    for _ in range(repeat):
        data = build()
    took = (time.process_time() - started) / repeat * 1000
    print(f"  {name:<22} {took:7.3f} ms per message ({len(data) / 1000:.1f} KB on the wire)")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kb", type=int, default=60, help="HTML size of the newsletter")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 20
    renderer = Renderer(SETTINGS)
    content = newsletter(args.kb, renderer)
    subject, html, text = renderer.html_and_text(content, now=NOW)
    # The parts as the renderer hands them over: the page's pieces encoded, the links not.
    compiled = renderer._html(content, NOW)
    text_wire, html_wire = renderer._wire(compiled, renderer._text_segments(compiled))
    message_id = make_msgid(domain=SETTINGS.mail_domain)
    print(
        f"a newsletter of {len(html.encode()) / 1000:.1f} KB HTML, {len(text) / 1000:.1f} KB text "
        f"and a calendar; load average {os.getloadavg()[0]:.2f}"
    )
    stdlib = measure(
        "stdlib EmailMessage",
        args.repeat,
        lambda: stdlib_message(content, subject, text, html, NOW, message_id),
    )
    ours = measure(
        "digest.mime (all)",
        args.repeat,
        lambda: renderer.message_bytes(content, "nl", subject, text, html, NOW, message_id),
    )
    pieces = measure(
        "digest.mime (as sent)",
        args.repeat,
        lambda: renderer.message_bytes(
            content, "nl", subject, text_wire, html_wire, NOW, message_id
        ),
    )
    print(f"stdlib / ours (all encoded): {stdlib / ours:.1f}x, {ours:.3f} ms")
    print(
        f"stdlib / ours (as sent):     {stdlib / pieces:.1f}x, {pieces:.3f} ms (target <= 0.5 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
