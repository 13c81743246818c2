"""Per-post mails: ``plan_notifications`` and their delivery, and how they meet the newsletter.

The week ends Friday 27 November 2026 16:00 Amsterdam time. Guardians ``e1`` (group 5) and ``e2``
(group 7) chose one mail per post; the De Vries family shares one address (written in two ways)
with a child in each group; ``n1`` reads the newsletter and ``a1`` the app.
"""

from __future__ import annotations

import email
import functools
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from conftest import child, cli_environment, document, group, guardian, on_event_loop, post, school
from smtp_server import SmtpServer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import Deliverer, SendReport
from digest.ingest import import_document
from digest.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    SkipReason,
    Suppression,
)
from digest.notify import NotifyResult, plan_notifications
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.render import Renderer
from digest.settings import Settings, load_settings
from digest.transports import open_transport

ZONE = "Europe/Amsterdam"
SETTLE = timedelta(minutes=10)
CUTOFF = parse_instant("2026-11-27T16:00", ZONE)
NEXT_CUTOFF = parse_instant("2026-12-04T16:00", ZONE)
PUBLISHED = {
    "m1": "2026-11-24T10:00:00+01:00",  # group 5
    "m2": "2026-11-25T12:00:00+01:00",  # the whole school
    "m3": "2026-11-26T09:00:00+01:00",  # group 7
    "m4": "2026-11-26T15:00:00+01:00",  # group 5
}
TITLES = {
    "m1": "Excursie naar het bos",
    "m2": "Sinterklaas op school",
    "m3": "Spreekbeurten",
    "m4": "Gymles gaat niet door",
}
GROUP_OF = {"m1": "g5", "m2": "gs", "m3": "g7", "m4": "g5"}
E1, E2, N1, A1 = (f"{g}@ouders.example" for g in ("e1", "e2", "n1", "a1"))
FAMILY = "gezin.devries@ouders.example"


def published(post_id: str) -> datetime:
    return datetime.fromisoformat(PUBLISHED[post_id])


def week_posts(*post_ids: str, **fields: Any) -> list[dict[str, Any]]:
    ids = post_ids or tuple(PUBLISHED)
    return [
        post(p, GROUP_OF[p], PUBLISHED[p], **{"title": TITLES[p], **fields.get(p, {})}) for p in ids
    ]


def family_school() -> dict[str, Any]:
    return document(
        schools=[school()],
        groups=[
            group("gs", kind="school", name="De Schakel"),
            group("g5", name="Groep 5"),
            group("g7", name="Groep 7"),
        ],
        children=[
            child("c1", ["g5"]),
            child("c2", ["g7"]),
            child("c3", ["g5"]),
            child("c4", ["g5"]),
            child("c5", ["g5"]),
            child("c6", ["g7"]),
        ],
        guardians=[
            guardian("e1", ["c1"], delivery="email", name="Fatma Yilmaz"),
            guardian("e2", ["c2"], delivery="email"),
            guardian("n1", ["c3"]),
            guardian("a1", ["c4"], delivery="app"),
            guardian(
                "v1", ["c5"], delivery="email", email="Gezin.DeVries@ouders.example", name="Anna"
            ),
            guardian("v2", ["c6"], delivery="email", email=FAMILY, name="Bram"),
        ],
        posts=week_posts(),
    )


# --- helpers ---------------------------------------------------------------------------------


def load(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)


def notify(sessions: sessionmaker[Session], at: datetime) -> NotifyResult:
    with sessions() as session, session.begin():
        return plan_notifications(session, "s1", at, settle=SETTLE)


def switch(sessions: sessionmaker[Session], guardian_id: str, delivery: str) -> None:
    """The portal sends the guardian again with a new preference."""
    doc = family_school()
    (changed,) = [g for g in doc["guardians"] if g["id"] == guardian_id]
    load(sessions, document(guardians=[{**changed, "delivery": delivery}]))


def per_post(sessions: sessionmaker[Session]) -> Counter[tuple[str, str]]:
    """How many per-post rows exist for each (post, address)."""
    with sessions() as session:
        query = select(Delivery.post_id, Delivery.address).where(Delivery.kind == DeliveryKind.POST)
        return Counter((str(p), a) for p, a in session.execute(query))


def newsletter_posts(sessions: sessionmaker[Session], cutoff: datetime) -> dict[str, list[str]]:
    with sessions() as session:
        query = (
            select(Delivery)
            .join(Edition)
            .where(Edition.cutoff == cutoff, Delivery.status == DeliveryStatus.QUEUED)
        )
        return {row.address: sorted(row.post_ids) for row in session.scalars(query)}


@functools.cache
def renderer() -> Renderer:
    """One renderer for the module: building one compiles every template."""
    return Renderer(mail_settings("null://"))


def mail_settings(url: str) -> Settings:
    return load_settings(
        mail_url=url, mail_from="nieuwsbrief@digest.example", base_url="https://digest.example"
    )


def deliver(sessions: sessionmaker[Session], server: SmtpServer, at: datetime) -> SendReport:
    async def one_pass() -> SendReport:
        transport = open_transport(server.url(), timeout=5, deadline=10)
        try:
            return await Deliverer(
                sessions, transport, mail_settings(server.url()), renderer()
            ).run(at)
        finally:
            await transport.close()

    return on_event_loop(one_pass())


def mails(server: SmtpServer) -> list[tuple[str, EmailMessage]]:
    """(envelope recipient, parsed message) of every accepted mail."""
    found = []
    for message in server.messages:
        (rcpt,) = message.rcpt_tos
        parsed = email.message_from_bytes(message.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        found.append((rcpt, parsed))
    return found


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


# --- planning ------------------------------------------------------------------------------


def test_a_post_is_mailed_only_after_the_settle_time(sessions):
    load(sessions, family_school())
    m1 = published("m1")

    early = notify(sessions, m1 + timedelta(minutes=5))
    assert (early.posts, early.queued, early.skipped) == (0, 0, 0)
    assert per_post(sessions) == Counter()

    settled = notify(sessions, m1 + SETTLE)
    assert (settled.posts, settled.queued, settled.skipped) == (1, 2, 0)
    assert per_post(sessions) == Counter({("m1", E1): 1, ("m1", FAMILY): 1})


def test_one_mail_per_post_and_address_and_running_again_adds_nothing(sessions):
    load(sessions, family_school())
    friday = parse_instant("2026-11-27T12:00", ZONE)

    first = notify(sessions, friday)
    expected = Counter(
        {
            ("m1", E1): 1,
            ("m2", E1): 1,
            ("m4", E1): 1,
            ("m2", E2): 1,
            ("m3", E2): 1,
            # The family gets each post of either child's group once, at its one address.
            ("m1", FAMILY): 1,
            ("m2", FAMILY): 1,
            ("m3", FAMILY): 1,
            ("m4", FAMILY): 1,
        }
    )
    assert (first.posts, first.queued) == (4, sum(expected.values()))
    assert per_post(sessions) == expected

    for again in (friday, friday + timedelta(hours=1), friday + timedelta(days=2)):
        assert notify(sessions, again).queued == 0
    assert per_post(sessions) == expected
    with sessions() as session:
        for row in session.scalars(select(Delivery).where(Delivery.kind == DeliveryKind.POST)):
            assert row.post_ids == [row.post_id]
            assert (row.status, row.edition_id, row.attempts) == (DeliveryStatus.QUEUED, None, 0)


def test_a_deleted_post_is_not_mailed(sessions, smtp_server: SmtpServer):
    deleted = {"m4": {"deleted_at": "2026-11-26T15:05:00+01:00"}}
    load(sessions, document(**{**family_school(), "posts": week_posts(**deleted)}))
    friday = parse_instant("2026-11-27T12:00", ZONE)
    notify(sessions, friday)
    assert {p for p, _ in per_post(sessions)} == {"m1", "m2", "m3"}

    # Deleted after its mails were queued, before they went: nothing of it is sent.
    load(sessions, document(posts=week_posts("m3", m3={"deleted_at": "2026-11-27T12:05:00+01:00"})))
    report = deliver(sessions, smtp_server, friday + timedelta(minutes=10))
    assert report.counts == {"sent": 5, "skipped": 2}
    assert not any(TITLES["m3"] in text_of(mail) for _, mail in mails(smtp_server))
    with sessions() as session:
        rows = session.scalars(select(Delivery).where(Delivery.post_id == "m3")).all()
        assert {(r.status, r.reason) for r in rows} == {
            (DeliveryStatus.SKIPPED, SkipReason.NO_POSTS)
        }


def test_a_suppressed_address_gets_a_skipped_row(sessions):
    load(sessions, family_school())
    with sessions() as session, session.begin():
        session.add(Suppression(address=E2, reason="550 5.1.1 no such user"))
    result = notify(sessions, parse_instant("2026-11-27T12:00", ZONE))
    assert result.skipped == 2
    with sessions() as session:
        rows = session.scalars(select(Delivery).where(Delivery.address == E2)).all()
        assert {(r.post_id, r.status, r.reason) for r in rows} == {
            ("m2", DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED),
            ("m3", DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED),
        }


# --- delivery --------------------------------------------------------------------------------


def test_each_post_reaches_each_address_once_with_its_own_subject(
    sessions, smtp_server: SmtpServer
):
    load(sessions, family_school())
    at = published("m2") + SETTLE
    notify(sessions, at)
    assert deliver(sessions, smtp_server, at).counts == {"sent": 5}
    notify(sessions, at + timedelta(minutes=5))
    assert deliver(sessions, smtp_server, at + timedelta(minutes=5)).counts == {}

    got = mails(smtp_server)
    assert Counter((rcpt, str(mail["Subject"])) for rcpt, mail in got) == Counter(
        {
            (E1, "De Schakel: Excursie naar het bos"): 1,
            (E1, "De Schakel: Sinterklaas op school"): 1,
            (E2, "De Schakel: Sinterklaas op school"): 1,
            (FAMILY, "De Schakel: Excursie naar het bos"): 1,
            (FAMILY, "De Schakel: Sinterklaas op school"): 1,
        }
    )
    for rcpt, mail in got:
        (to,) = mail["To"].addresses
        assert to.addr_spec == rcpt
        text = text_of(mail)
        mailed = [p for p, title in TITLES.items() if title in text]
        assert [TITLES[p] for p in mailed] == [str(mail["Subject"]).split(": ", 1)[1]]
        assert mail["Auto-Submitted"] == "auto-generated" and mail["List-Unsubscribe"]
    names = {str(mail["To"].addresses[0].display_name) for rcpt, mail in got}
    assert names == {"Fatma Yilmaz", "Ouder e2", "Anna en Bram"}


def test_a_quick_edit_within_the_settle_time_lands_in_the_first_mail(
    sessions, smtp_server: SmtpServer
):
    load(sessions, document(**{**family_school(), "posts": week_posts("m1")}))
    m1 = published("m1")
    notify(sessions, m1 + timedelta(minutes=5))
    fixed = {"m1": {"title": "Excursie naar het bos (laarzen mee!)"}}
    load(sessions, document(posts=week_posts("m1", **fixed)))
    notify(sessions, m1 + SETTLE)
    deliver(sessions, smtp_server, m1 + SETTLE)
    subjects = {str(mail["Subject"]) for _, mail in mails(smtp_server)}
    assert subjects == {"De Schakel: Excursie naar het bos (laarzen mee!)"}
    assert len(smtp_server.messages) == 2


# --- switching between per-post mails and the newsletter -----------------------------------


def test_email_to_newsletter_midweek_gets_only_the_posts_not_mailed_yet(
    sessions, smtp_server: SmtpServer
):
    load(sessions, family_school())
    tuesday = published("m1") + SETTLE
    notify(sessions, tuesday)
    deliver(sessions, smtp_server, tuesday)
    assert Counter(rcpt for rcpt, _ in mails(smtp_server))[E1] == 1  # m1, on its own

    switch(sessions, "e1", "newsletter")  # Tuesday evening
    assert notify(sessions, parse_instant("2026-11-27T12:00", ZONE)).queued > 0
    assert {p for p, a in per_post(sessions) if a == E1} == {"m1"}

    with sessions() as session, session.begin():
        plan_edition(session, "s1", CUTOFF)
    planned = newsletter_posts(sessions, CUTOFF)
    assert planned[E1] == ["m2", "m4"]  # m1 reached them already
    assert planned[N1] == ["m1", "m2", "m4"]


def test_app_to_newsletter_midweek_gets_the_whole_week(sessions):
    load(sessions, family_school())
    notify(sessions, published("m1") + SETTLE)
    switch(sessions, "a1", "newsletter")
    notify(sessions, parse_instant("2026-11-27T12:00", ZONE))
    assert not any(a == A1 for _, a in per_post(sessions))

    with sessions() as session, session.begin():
        plan_edition(session, "s1", CUTOFF)
    assert newsletter_posts(sessions, CUTOFF)[A1] == ["m1", "m2", "m4"]


def test_newsletter_to_email_does_not_mail_last_weeks_news_again(sessions):
    load(sessions, family_school())
    with sessions() as session, session.begin():
        plan_edition(session, "s1", CUTOFF)
    assert newsletter_posts(sessions, CUTOFF)[N1] == ["m1", "m2", "m4"]

    switch(sessions, "n1", "email")  # on Saturday
    saturday = parse_instant("2026-11-28T10:00", ZONE)
    notify(sessions, saturday)
    assert not any(a == N1 for _, a in per_post(sessions))

    monday = parse_instant("2026-11-30T09:00", ZONE)
    load(sessions, document(posts=[post("m5", "g5", monday.isoformat(), title="Luizencontrole")]))
    notify(sessions, monday + SETTLE)
    assert {p for p, a in per_post(sessions) if a == N1} == {"m5"}
    with sessions() as session, session.begin():
        plan_edition(session, "s1", NEXT_CUTOFF)
    assert N1 not in newsletter_posts(sessions, NEXT_CUTOFF)  # skipped: per_post


# --- the command -----------------------------------------------------------------------------


def digest(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = cli_environment(**env)
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_digest_notify_at_queues_and_sends_the_settled_posts(
    sessions, db_url: str, smtp_server: SmtpServer, tmp_path: Path
):
    load(sessions, family_school())
    # Two posts to group 5, twelve and seven minutes before --at: only the first has settled.
    early = post("m0", "g5", "2026-11-24T09:55:00+01:00", title="Schoolfotograaf")
    load(sessions, document(posts=[early]))
    env = {
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_MAIL_URL": smtp_server.url(),
        "DIGEST_MAIL_FROM": "nieuwsbrief@digest.example",
    }

    result = digest(tmp_path, "notify", "--at", "2026-11-24T10:07", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "school s1: 1 recent post(s), 2 mail(s) queued",
        "sent through smtp: 2 sent",
    ]
    assert sorted(rcpt for rcpt, _ in mails(smtp_server)) == [E1, FAMILY]
    assert {str(mail["Subject"]) for _, mail in mails(smtp_server)} == {
        "De Schakel: Schoolfotograaf"
    }
    assert per_post(sessions) == Counter({("m0", E1): 1, ("m0", FAMILY): 1})
