"""The suppression list: kept with reason and time, skipped by the plan, managed by `digest
suppress` (real processes on the test's SQLite file or PostgreSQL database)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from conftest import guardian
from sqlalchemy import select
from test_cli import digest as run_digest

from digest.errors import NotSuppressed
from digest.ingest import import_document
from digest.models import Delivery, DeliveryStatus, SkipReason, Suppression
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.suppressions import (
    add_suppression,
    list_suppressions,
    normalize_address,
    remove_suppression,
)

CUTOFF = parse_instant("2026-11-27T16:00", "Europe/Amsterdam")


def test_add_keeps_reason_and_time_and_lists_oldest_first(sessions):
    with sessions() as session, session.begin():
        row, added = add_suppression(session, "P2@Ouders.example", "550 5.1.1", at=CUTOFF)
        assert added and row.address == "p2@ouders.example"
        add_suppression(session, "p1@ouders.example", "by hand", at=CUTOFF + timedelta(hours=1))
    with sessions() as session, session.begin():
        again, added = add_suppression(session, "p2@ouders.example", "other", at=CUTOFF)
        assert not added and again.reason == "550 5.1.1"
        listed = [(s.address, s.reason, s.created_at) for s in list_suppressions(session)]
    assert listed == [
        ("p2@ouders.example", "550 5.1.1", CUTOFF),
        ("p1@ouders.example", "by hand", CUTOFF + timedelta(hours=1)),
    ]


def test_remove_lifts_it_and_an_unknown_address_says_so(sessions):
    with sessions() as session, session.begin():
        add_suppression(session, "p2@ouders.example", "550 5.1.1")
    with sessions() as session, session.begin():
        assert remove_suppression(session, " P2@ouders.EXAMPLE ").reason == "550 5.1.1"
    with sessions() as session, session.begin():
        assert session.get(Suppression, "p2@ouders.example") is None
        with pytest.raises(NotSuppressed) as error:
            remove_suppression(session, "p2@ouders.example")
        assert str(error.value) == '"p2@ouders.example" is not suppressed'
        assert error.value.address == "p2@ouders.example"


def test_a_suppressed_address_is_skipped_by_the_plan_whatever_its_case(sessions, small_school):
    small_school["guardians"].append(guardian("p6", ["c2"], email="Fatma.Yilmaz@Example.org"))
    with sessions() as session, session.begin():
        import_document(session, small_school)
        add_suppression(session, "fatma.yilmaz@example.org", "by hand")
        add_suppression(session, "p2@ouders.example", "550 5.1.1")
        plan_edition(session, "s1", CUTOFF)
    with sessions() as session:
        rows = {d.address: (d.status, d.reason) for d in session.scalars(select(Delivery))}
    assert rows == {
        "p1@ouders.example": (DeliveryStatus.QUEUED, None),
        "p2@ouders.example": (DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED),
        "fatma.yilmaz@example.org": (DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED),
    }


@pytest.mark.parametrize("text", ["a b@c.nl", "@c.nl", "a@", "<a@c.nl>", "a@b,c@d.nl", ""])
def test_only_bare_addresses_are_accepted(text):
    with pytest.raises(ValueError, match="is not an email address"):
        normalize_address(text)


# --- the command -------------------------------------------------------------------------------


def cli(tmp_path: Path, db_url: str, *args: str):
    return run_digest(tmp_path, *args, env={"DIGEST_DATABASE_URL": db_url})


def test_suppress_add_list_remove(tmp_path, db_url):
    assert cli(tmp_path, db_url, "suppress").stdout == "no suppressed addresses\n"
    added = cli(
        tmp_path, db_url, "suppress", "--add", "P2@Ouders.Example", "--reason", "moved abroad"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout == "suppressed p2@ouders.example\n"
    again = cli(tmp_path, db_url, "suppress", "--add", "p2@ouders.example", "--reason", "x")
    assert again.returncode == 0 and "already suppressed since" in again.stdout
    assert "moved abroad" in again.stdout

    listing = cli(tmp_path, db_url, "suppress", "--list")
    assert listing.returncode == 0, listing.stderr
    header, line = listing.stdout.splitlines()
    assert header.split() == ["address", "since", "reason"]
    assert line.startswith("p2@ouders.example") and line.endswith("UTC  moved abroad")

    removed = cli(tmp_path, db_url, "suppress", "--remove", "p2@ouders.example")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "p2@ouders.example is no longer suppressed (was: moved abroad)\n"
    assert cli(tmp_path, db_url, "suppress", "--list").stdout == "no suppressed addresses\n"


def test_suppress_remove_of_an_address_not_listed_is_one_line_and_exit_1(tmp_path, db_url):
    result = cli(tmp_path, db_url, "suppress", "--remove", "nobody@ouders.example")
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: "nobody@ouders.example" is not suppressed'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--add", "p2@ouders.example"), "--add needs a --reason"),
        (("--add", "not an address", "--reason", "x"), "is not an email address"),
        (("--reason", "x"), "--reason goes with --add"),
        (("--list", "--remove", "p2@ouders.example"), "use one of --list, --add and --remove"),
    ],
)
def test_suppress_usage_errors_exit_2(tmp_path, args, message):
    result = run_digest(tmp_path, "suppress", *args)
    assert result.returncode == 2 and message in result.stderr
