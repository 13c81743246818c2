"""Delivery end to end: import, plan, render and send to a real SMTP server and a real Maildir."""

from __future__ import annotations

import asyncio
import email
import mailbox
import shutil
from email.policy import default
from typing import Any

import pytest
from conftest import child, document, group, guardian, on_event_loop, post, school
from jinja2 import UndefinedError
from smtp_server import SmtpServer
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import Deliverer
from digest.ingest import import_document
from digest.models import Delivery, DeliveryStatus, Edition, EditionStatus, Suppression
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.render import Renderer, templates_path
from digest.settings import load_settings
from digest.transports import open_transport

# Every test here once on uvloop (the default) and once on asyncio's own loop.
pytestmark = pytest.mark.usefixtures("each_event_loop")

CUTOFF = parse_instant("2026-11-27T16:00", "Europe/Amsterdam")
SETTINGS = load_settings(mail_from="nieuwsbrief@digest.example", base_url="https://digest.example")


def prepare(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)
        plan_edition(session, "s1", CUTOFF)


def deliver(
    sessions: sessionmaker[Session],
    url: str,
    at: Any = CUTOFF,
    *,
    concurrency: int = 8,
    **options: Any,
) -> Any:
    """One pass over ``url`` with ``concurrency`` connections; ``options`` go to the Deliverer."""

    async def go() -> Any:
        transport = open_transport(url, pool_size=concurrency, timeout=2, deadline=5)
        deliverer = Deliverer(sessions, transport, SETTINGS, concurrency=concurrency, **options)
        try:
            return await deliverer.run(at)
        finally:
            await transport.close()

    return on_event_loop(go())


def one_class(parents: int) -> dict[str, Any]:
    """A school of one class with a post this week; each child's one parent wants newsletters."""
    return document(
        schools=[school()],
        groups=[group("g5", name="Groep 5")],
        children=[child(f"c{n}", ["g5"]) for n in range(parents)],
        guardians=[guardian(f"p{n}", [f"c{n}"]) for n in range(parents)],
        posts=[post("m1", "g5", "2026-11-24T10:15:00+01:00")],
    )


def statuses(sessions: sessionmaker[Session]) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {
            d.address: (d.status.value, d.last_reply) for d in session.scalars(select(Delivery))
        }


def test_each_newsletter_address_receives_one_mail_over_smtp(
    sessions, small_school, smtp_server: SmtpServer
):
    prepare(sessions, small_school)
    report = deliver(sessions, smtp_server.url())
    assert report.counts == {"sent": 2}
    received = {
        m.rcpt_tos: email.message_from_bytes(m.content, policy=default)
        for m in smtp_server.messages
    }
    assert set(received) == {("p1@ouders.example",), ("p2@ouders.example",)}
    mail = received[("p1@ouders.example",)]
    assert mail.get_content_type() == "multipart/alternative"
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    for title in ("Excursie naar het bos", "Sinterklaas op school"):
        assert title in html and title in text
    for other in ("Spreekbeurten", "Notulen MR"):  # group 7 and the committee: not p1's
        assert other not in html and other not in text
    assert "De Schakel" in mail["From"]
    assert statuses(sessions)["p1@ouders.example"][0] == "sent"
    with sessions() as session:
        assert session.scalars(select(Edition)).one().status is EditionStatus.DONE


def test_outcomes_are_committed_a_connections_worth_at_a_time(
    engine: Engine, sessions, smtp_server: SmtpServer
):
    # 40 parents over 4 connections: their rows are recorded in groups of 4 (the wait for a
    # group is made long, so only a full group or the batch's last outcome writes), not one
    # transaction per mail.
    prepare(sessions, one_class(40))
    commits = 0

    def count(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(engine, "commit", count)
    try:
        report = deliver(sessions, smtp_server.url(), concurrency=4, group_commit_seconds=30)
    finally:
        event.remove(engine, "commit", count)
    assert report.counts == {"sent": 40}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        f"p{n}@ouders.example" for n in range(40)
    )
    assert {status for status, _ in statuses(sessions).values()} == {"sent"}
    # 10 groups, the claims (one batch, then the empty one) and closing the edition.
    assert commits <= 10 + 4, commits


def test_the_next_batch_goes_out_while_the_last_mails_of_a_batch_wait_for_their_reply(
    sessions, smtp_server: SmtpServer
):
    # Batches of one mail over two connections, each message answered 0.2 s after its end:
    # the next batch is claimed, rendered and on the second connection while the first
    # waits, so two messages are with the server at once. Batch after batch, one would be.
    prepare(sessions, one_class(6))
    smtp_server.delays["DATA"] = 0.2
    report = deliver(sessions, smtp_server.url(), concurrency=2, batch_size=1)
    assert report.counts == {"sent": 6}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"p{n}@ouders.example" for n in range(6)
    ]
    assert {status for status, _ in statuses(sessions).values()} == {"sent"}
    assert smtp_server.peak["DATA"] == 2


def test_a_rate_limited_worker_claims_only_what_it_sends_before_its_lease_runs_out(
    sessions, smtp_server: SmtpServer
):
    # 24 parents, 6 mails a second per worker, a lease of 2 s. A worker that claimed all 24 at
    # once would still hold about 12 when its lease ran out, and a second worker starting then
    # would send those again. It claims what it sends in half a lease, less what it holds
    # rendered and on its connection: 4 at a time, 6 held at most, a second's sending. So each
    # parent gets one mail.
    prepare(sessions, one_class(24))
    settings = load_settings(
        mail_from="nieuwsbrief@digest.example",
        base_url="https://digest.example",
        send_rate=6,
        lease_seconds=2,
    )

    async def worker(start_after: float) -> Any:
        await asyncio.sleep(start_after)
        transport = open_transport(smtp_server.url(), pool_size=1, timeout=2, deadline=5)
        try:
            return await Deliverer(sessions, transport, settings, concurrency=1).run(CUTOFF)
        finally:
            await transport.close()

    async def both() -> list[Any]:
        return await asyncio.gather(worker(0), worker(2.5))

    first, second = on_event_loop(both())
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        f"p{n}@ouders.example" for n in range(24)
    )
    assert first.counts["sent"] + second.counts.get("sent", 0) == 24
    assert {status for status, _ in statuses(sessions).values()} == {"sent"}


def test_a_mail_that_fails_to_render_ends_the_pass_after_the_others_are_recorded(
    sessions, smtp_server: SmtpServer, tmp_path
):
    # A template that fails for one post (a misspelt name: StrictUndefined) stands for any
    # rendering bug. The parents of that post's class get nothing; every other mail of the
    # batch is sent and recorded before the error ends the pass, and the failed row stays
    # claimed, to be tried again when its lease ends.
    templates = tmp_path / "templates"
    shutil.copytree(templates_path(), templates)
    text = templates / "newsletter.txt.j2"
    loop = "{% for item in items %}\n"
    broken = '{% if item.post.title == "Kapot" %}{{ misspelt }}{% endif %}\n'
    text.write_text(text.read_text().replace(loop, loop + broken, 1))
    doc = one_class(6)
    doc["groups"].append(group("g6", name="Groep 6"))
    doc["children"].append(child("c6", ["g6"]))
    doc["guardians"].append(guardian("p6", ["c6"]))
    doc["posts"].append(post("m2", "g6", "2026-11-24T11:00:00+01:00", title="Kapot"))
    prepare(sessions, doc)

    with pytest.raises(UndefinedError):
        deliver(sessions, smtp_server.url(), renderer=Renderer(SETTINGS, templates))
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"p{n}@ouders.example" for n in range(6)
    ]
    rows = statuses(sessions)
    assert {rows[f"p{n}@ouders.example"][0] for n in range(6)} == {"sent"}
    assert rows["p6@ouders.example"][0] == "sending"


def test_sending_again_sends_nothing(sessions, small_school, smtp_server: SmtpServer):
    prepare(sessions, small_school)
    deliver(sessions, smtp_server.url())
    prepare(sessions, small_school)  # the same import and plan again
    report = deliver(sessions, smtp_server.url())
    assert report.counts == {}
    assert len(smtp_server.messages) == 2


def test_permanent_refusal_fails_the_row_and_suppresses_the_address(
    sessions, small_school, smtp_server: SmtpServer
):
    smtp_server.rcpt_replies["p2@ouders.example"] = "550 5.1.1 <p2@ouders.example>: no such user"
    prepare(sessions, small_school)
    report = deliver(sessions, smtp_server.url())
    assert report.counts == {"sent": 1, "failed": 1}
    status, reply = statuses(sessions)["p2@ouders.example"]
    assert status == "failed" and "5.1.1" in (reply or "")
    assert [m.rcpt_tos for m in smtp_server.messages] == [("p1@ouders.example",)]
    with sessions() as session:
        assert session.get(Suppression, "p2@ouders.example") is not None


def test_temporary_refusal_is_retried_later_and_then_sent(
    sessions, small_school, smtp_server: SmtpServer
):
    smtp_server.rcpt_replies["p2@ouders.example"] = "451 4.3.0 try again later"
    prepare(sessions, small_school)
    deliver(sessions, smtp_server.url())
    with sessions() as session:
        row = session.scalars(select(Delivery).where(Delivery.address == "p2@ouders.example")).one()
        assert row.status is DeliveryStatus.RETRY
        assert row.next_attempt_at is not None and row.next_attempt_at > CUTOFF
        retry_at = row.next_attempt_at
    del smtp_server.rcpt_replies["p2@ouders.example"]
    assert deliver(sessions, smtp_server.url(), at=CUTOFF).counts == {}  # not due yet
    assert deliver(sessions, smtp_server.url(), at=retry_at).counts == {"sent": 1}
    assert sorted(m.rcpt_tos for m in smtp_server.messages) == [
        ("p1@ouders.example",),
        ("p2@ouders.example",),
    ]


def test_a_later_batch_sees_a_consent_withdrawn_and_a_post_edited_after_an_earlier_one(
    sessions, small_school, smtp_server: SmtpServer
):
    """A post is built once for many mails, but never served from before a change to it."""
    photo = {
        "id": "f1",
        "type": "image",
        "url": "https://portal.example/f1.jpg",
        "child_ids": ["c1"],
    }
    whole_school = post("m3", "gs", "2026-11-26T12:00:00+01:00", title="Sinterklaas op school")
    small_school["posts"][2] = {**whole_school, "media": [photo]}
    smtp_server.rcpt_replies["p2@ouders.example"] = "451 4.3.0 try again later"
    prepare(sessions, small_school)
    deliver(sessions, smtp_server.url())
    with sessions() as session, session.begin():
        retry_at = (
            session.scalars(select(Delivery).where(Delivery.address == "p2@ouders.example"))
            .one()
            .next_attempt_at
        )
        import_document(
            session,
            document(
                children=[child("c1", ["g5"], consent="portal")],
                posts=[{**whole_school, "title": "Sinterklaas komt", "media": [photo]}],
            ),
        )
    del smtp_server.rcpt_replies["p2@ouders.example"]
    deliver(sessions, smtp_server.url(), at=retry_at)

    def html_to(address: str) -> str:
        (mail,) = [m for m in smtp_server.messages if m.rcpt_tos == (address,)]
        parsed = email.message_from_bytes(mail.content, policy=default)
        return parsed.get_body(("html",)).get_content()

    first, later = html_to("p1@ouders.example"), html_to("p2@ouders.example")
    assert "/media/" in first and "Sinterklaas op school" in first
    assert "/media/" not in later  # c1's parents no longer allow mail
    assert "Sinterklaas komt" in later and "Sinterklaas op school" not in later


def test_post_deleted_after_planning_is_not_mailed(sessions, small_school, tmp_path):
    prepare(sessions, small_school)
    with sessions() as session, session.begin():
        import_document(
            session,
            document(
                posts=[
                    post(
                        "m1",
                        "g5",
                        "2026-11-24T10:15:00+01:00",
                        deleted_at="2026-11-27T17:00:00+01:00",
                    )
                ]
            ),
        )
    deliver(sessions, f"maildir://{tmp_path / 'out'}")
    box = mailbox.Maildir(tmp_path / "out", create=False)
    bodies = [m.as_string() for m in box]
    assert len(bodies) == 2
    assert not any("Excursie naar het bos" in body for body in bodies)


def test_maildir_holds_one_parseable_mail_per_address(sessions, small_school, tmp_path):
    prepare(sessions, small_school)
    deliver(sessions, f"maildir://{tmp_path / 'out'}")
    box = mailbox.Maildir(tmp_path / "out", create=False)
    mails = [email.message_from_bytes(box.get_bytes(key), policy=default) for key in box.iterkeys()]
    assert sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in mails) == [
        "p1@ouders.example",
        "p2@ouders.example",
    ]
    for mail in mails:
        kinds = [part.get_content_type() for part in mail.walk() if not part.is_multipart()]
        assert kinds == ["text/plain", "text/html"]
