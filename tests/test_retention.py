"""Data retention on SQLite and PostgreSQL: old rows go, recent ones stay, no post goes twice.

The week is sent into a real Maildir through the same job functions the scheduler and the CLI
use; the purge runs with the clock a year later (or a short age right after the week), and the
following plans must not mail anything already mailed.
"""

from __future__ import annotations

import mailbox
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from conftest import child, document, group, guardian, on_event_loop, post, school
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digest.heartbeat import beat
from digest.ingest import import_document
from digest.models import (
    Alert,
    AlertKind,
    AuditEvent,
    Delivery,
    DeliveryKind,
    EditionPost,
    Heartbeat,
    LoginThrottle,
    Recipient,
)
from digest.notify import plan_notifications
from digest.periods import parse_instant
from digest.retention import purge, purge_cached_images, run_retention
from digest.settings import Settings, load_settings
from scheduler.jobs import plan_latest, send_due

ZONE = "Europe/Amsterdam"
CUTOFF = parse_instant("2026-11-27T16:00", ZONE)
WEDNESDAY = parse_instant("2026-11-25T18:00", ZONE)
SETTLE = timedelta(minutes=10)
TITLES = {"m1": "Excursie naar het bos", "m2": "Sinterklaas op school", "m3": "Spreekbeurten"}


@pytest.fixture(autouse=True)
def in_the_week() -> Iterator[None]:
    """The clock on the Monday of the replayed week, running: rows are stamped (``created_at``)
    on the clock, so the week's rows are as old as its posts, whatever day the tests run."""
    with time_machine.travel(parse_instant("2026-11-23T08:00", ZONE), tick=True):
        yield


def week() -> dict[str, Any]:
    """Per-post and newsletter readers sharing the week's posts."""
    return document(
        schools=[school()],
        groups=[group("gs", kind="school"), group("g5"), group("g7")],
        children=[child("c1", ["g5"]), child("c2", ["g7"]), child("c3", ["g5"])],
        guardians=[
            guardian("e1", ["c1"], delivery="email"),
            guardian("e2", ["c2"], delivery="email"),
            guardian("n1", ["c3"]),
            guardian("n2", ["c2"]),
        ],
        posts=[
            post("m1", "g5", "2026-11-24T10:00:00+01:00", title=TITLES["m1"]),
            post("m2", "gs", "2026-11-24T12:00:00+01:00", title=TITLES["m2"]),
            post("m3", "g7", "2026-11-26T09:00:00+01:00", title=TITLES["m3"]),
        ],
    )


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(
        mail_url=f"maildir://{tmp_path / 'outbox'}",
        mail_from="nieuwsbrief@digest.example",
        base_url="https://digest.example",
        media_cache_dir=str(tmp_path / "media-cache"),
    )


def load(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)


def notify_and_send(sessions: sessionmaker[Session], settings: Settings, at: datetime) -> None:
    with sessions() as session, session.begin():
        plan_notifications(session, "s1", at, settle=SETTLE)
    on_event_loop(send_due(sessions, settings, at))


def plan_and_send(sessions: sessionmaker[Session], settings: Settings, at: datetime) -> None:
    edition = plan_latest(sessions, "s1", at).edition
    on_event_loop(send_due(sessions, settings, max(at, edition.cutoff)))


def mailed(settings: Settings) -> Counter[tuple[str, str]]:
    """(address, post title) of every mail in the Maildir: a post twice to one address shows."""
    box = mailbox.Maildir(settings.mail_url.removeprefix("maildir://"), create=False)
    seen: Counter[tuple[str, str]] = Counter()
    for key in box.iterkeys():
        mail = box.get_bytes(key).decode("utf-8", "replace")
        to = next(line for line in mail.splitlines() if line.lower().startswith("to:"))
        address = to.split("<")[-1].strip(" >").lower()
        for title in TITLES.values():
            if title in mail:
                seen[address, title] += 1
    return seen


def switch(sessions: sessionmaker[Session], **preferences: str) -> None:
    """The portal sends guardians again with another delivery preference."""
    changed = [g for g in week()["guardians"] if g["id"] in preferences]
    load(sessions, document(guardians=[{**g, "delivery": preferences[g["id"]]} for g in changed]))


def count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def a_year_after_the_week() -> datetime:
    return CUTOFF + timedelta(days=366)


def send_the_week(sessions: sessionmaker[Session], settings: Settings) -> Counter[tuple[str, str]]:
    load(sessions, week())
    notify_and_send(sessions, settings, WEDNESDAY)  # m1, m2 to e1 and e2 on their own
    plan_and_send(sessions, settings, CUTOFF)  # the newsletter for n1, n2; m3 on its own later
    notify_and_send(sessions, settings, CUTOFF + timedelta(hours=1))
    sent = mailed(settings)
    assert sent[("e1@ouders.example", TITLES["m1"])] == 1
    assert sent[("n1@ouders.example", TITLES["m1"])] == 1
    assert sent[("e2@ouders.example", TITLES["m3"])] == 1
    return sent


def test_a_post_already_mailed_is_not_mailed_again_after_a_purge(sessions, tmp_path):
    settings = settings_for(tmp_path)
    before = send_the_week(sessions, settings)
    # The riskiest moment: readers switch, so the newsletter and per-post paths both look back.
    switch(sessions, e1="newsletter", n1="email", n2="email")
    later = a_year_after_the_week()

    report = run_retention(sessions, settings, later)

    assert count(sessions, Delivery) == 0, "every row of the week is a year old and final"
    assert report.counts["deliveries"] > 0
    assert count(sessions, EditionPost) == 3, "the once-only memory of the newsletter stays"
    for at in (later, later + timedelta(days=7)):
        notify_and_send(sessions, settings, at)
        plan_and_send(sessions, settings, at)
    assert mailed(settings) == before
    assert count(sessions, Delivery, Delivery.status == "queued") == 0


def test_a_short_age_keeps_what_the_per_post_window_still_needs(sessions, tmp_path):
    settings = settings_for(tmp_path)
    before = send_the_week(sessions, settings)
    switch(sessions, e1="newsletter", n1="email")
    soon = CUTOFF + timedelta(days=2)
    rows = count(sessions, Delivery)

    with sessions() as session, session.begin():
        report = purge(session, soon, days=1)

    assert report.counts["deliveries"] == 0
    assert count(sessions, Delivery) == rows
    notify_and_send(sessions, settings, soon)
    plan_and_send(sessions, settings, soon + timedelta(days=7))
    assert mailed(settings) == before


def test_old_rows_go_and_recent_rows_stay(sessions, tmp_path):
    now = datetime(2028, 6, 1, 12, tzinfo=UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=30)
    with sessions() as session, session.begin():
        session.add_all(
            [
                AuditEvent(at=old, action="preview", guardian_id="p1"),
                AuditEvent(at=recent, action="preview", guardian_id="p1"),
                LoginThrottle(key="old", failures=3, first_at=old),
                LoginThrottle(key="recent", failures=3, first_at=recent),
                Alert(kind=AlertKind.RUN_FAILED, message="old", created_at=old, resolved_at=old),
                Alert(kind=AlertKind.RUN_FAILED, message="new", created_at=old, resolved_at=recent),
                Alert(kind=AlertKind.MISSED_RUN, message="open", created_at=old),
            ]
        )
    beat(sessions, "worker", now=now - timedelta(days=2), process="worker:gone:1")
    beat(sessions, "worker", now=now - timedelta(minutes=1), process="worker:here:1")
    cache = tmp_path / "media-cache" / "ab"
    cache.mkdir(parents=True)
    for name, when in (("old.jpg", old), ("recent.jpg", recent)):
        (cache / name).write_bytes(b"\xff\xd8")
        os.utime(cache / name, (when.timestamp(), when.timestamp()))

    with sessions() as session, session.begin():
        report = purge(session, now, days=365)
    images = purge_cached_images(tmp_path / "media-cache", report.before)

    assert report.counts == {
        "recipients": 0,
        "deliveries": 0,
        "audit_events": 1,
        "login_throttle": 1,
        "alerts": 1,
        "heartbeats": 1,
    }
    assert images == 1
    assert sorted(p.name for p in cache.iterdir()) == ["recent.jpg"]
    with sessions() as session:
        assert session.scalars(select(AuditEvent.at)).one() == recent
        assert session.scalars(select(LoginThrottle.key)).one() == "recent"
        assert sorted(session.scalars(select(Alert.message))) == ["new", "open"]
        assert session.scalars(select(Heartbeat.id)).one() == "worker:here:1"


def test_a_guardian_deleted_by_the_portal_loses_their_rows(sessions, tmp_path):
    settings = settings_for(tmp_path)
    send_the_week(sessions, settings)
    assert count(sessions, Recipient, Recipient.guardian_id == "n1") == 1
    newsletter_to = Delivery.address == "n1@ouders.example"
    assert count(sessions, Delivery, newsletter_to) == 1

    load(sessions, document(guardians=[{"id": "n1", "deleted": True}]))
    assert count(sessions, Recipient, Recipient.guardian_id == "n1") == 0
    rows = count(sessions, Delivery)
    # Past the per-post window, long before the age: only the deleted guardian's mail goes.
    with sessions() as session, session.begin():
        report = purge(session, CUTOFF + timedelta(days=8), days=365)

    assert report.counts["deliveries"] == 1
    assert count(sessions, Delivery, newsletter_to) == 0
    assert count(sessions, Delivery) == rows - 1
    assert count(sessions, Delivery, Delivery.kind == DeliveryKind.POST) > 0


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_dry_run_counts_without_deleting(sessions, tmp_path):
    settings = settings_for(tmp_path)
    send_the_week(sessions, settings)
    rows = count(sessions, Delivery)
    report = run_retention(sessions, settings, a_year_after_the_week(), dry_run=True)
    assert report.counts["deliveries"] == rows > 0
    assert count(sessions, Delivery) == rows
