"""The plan stage: DESIGN.md's rules on who gets which post, each test named for its rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import child, document, group, guardian, post, school
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from digest.ingest import import_document
from digest.models import Delivery, Edition, EditionStatus, Guardian, Recipient, Suppression
from digest.periods import latest_cutoff, parse_instant
from digest.plan import plan_edition
from digest.status import edition_status, find_edition

ZONE = "Europe/Amsterdam"
CUTOFF = parse_instant("2026-11-27T16:00", ZONE)  # Friday, week 48
NEXT_CUTOFF = parse_instant("2026-12-04T16:00", ZONE)


def load(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)


def plan(sessions: sessionmaker[Session], cutoff: datetime = CUTOFF, school_id: str = "s1") -> Any:
    with sessions() as session, session.begin():
        return plan_edition(session, school_id, cutoff)


def outcome(sessions: sessionmaker[Session], cutoff: datetime = CUTOFF) -> dict[str, Any]:
    """guardian id -> (status[:reason], sorted post ids) for the edition ending at ``cutoff``."""
    with sessions() as session:
        edition = find_edition(session, "s1", cutoff)
        assert edition is not None
        lines = edition_status(session, edition)
        posts = {
            r.guardian_id: sorted(d.post_ids) if d else []
            for r, d in session.execute(
                select(Recipient, Delivery)
                .outerjoin(Delivery, Delivery.id == Recipient.delivery_id)
                .where(Recipient.edition_id == edition.id)
            )
        }
    return {
        line.guardian_id: (
            f"{line.status}:{line.reason}" if line.reason else line.status,
            posts[line.guardian_id],
        )
        for line in lines
    }


def test_every_guardian_ends_with_a_status_and_reason(sessions, small_school):
    load(sessions, small_school)
    plan(sessions)
    result = outcome(sessions)
    assert result == {
        # no portal account: the newsletter whatever `delivery` says
        "p1": ("queued", ["m1", "m3"]),
        "p2": ("queued", ["m2", "m3"]),
        "p3": ("skipped:app", []),
        "p4": ("skipped:per_post", []),
        "p5": ("skipped:unreachable", []),
    }


def test_committee_posts_reach_only_explicit_members(sessions, small_school):
    small_school["guardians"][1]["group_ids"] = ["mr"]
    load(sessions, small_school)
    plan(sessions)
    result = outcome(sessions)
    assert result["p2"][1] == ["m2", "m3", "m4"]
    assert "m4" not in result["p1"][1]


def test_never_a_post_of_another_school(sessions, small_school):
    other = document(
        schools=[school("s2", name="De Regenboog")],
        groups=[
            group("x5", school_id="s2", kind="class"),
            group("xs", school_id="s2", kind="school"),
        ],
        children=[child("x1", ["x5"], school_id="s2")],
        guardians=[guardian("q1", ["x1"], school_id="s2")],
        posts=[
            post("o1", "x5", "2026-11-24T10:00:00+01:00"),
            post("o2", "xs", "2026-11-24T11:00:00+01:00"),
        ],
    )
    load(sessions, small_school)
    load(sessions, other)
    plan(sessions)
    plan(sessions, school_id="s2")
    result = outcome(sessions)
    assert all(not {"o1", "o2"} & set(posts) for _, posts in result.values())


def test_deleted_and_unpublished_posts_never_arrive(sessions, small_school):
    small_school["posts"] += [
        post("d1", "g5", "2026-11-24T11:00:00+01:00", deleted_at="2026-11-25T08:00:00+01:00"),
        post("draft", "g5", None),
        post("future", "g5", "2026-11-28T09:00:00+01:00"),  # after the cutoff: next week
    ]
    load(sessions, small_school)
    plan(sessions)
    assert outcome(sessions)["p1"][1] == ["m1", "m3"]


def test_post_deleted_by_the_portal_drops_out_of_the_next_edition(sessions, small_school):
    load(sessions, small_school)
    load(sessions, document(posts=[{"id": "m1", "deleted": True}]))
    plan(sessions)
    assert outcome(sessions)["p1"][1] == ["m3"]


def test_planning_the_same_edition_twice_is_a_no_op(sessions, small_school):
    load(sessions, small_school)
    first = plan(sessions)
    second = plan(sessions)
    assert first.created and not second.created
    assert second.edition.id == first.edition.id
    with sessions() as session:
        assert len(session.scalars(select(Delivery)).all()) == 2
        assert len(session.scalars(select(Edition)).all()) == 1


def test_late_post_goes_into_the_next_edition(sessions, small_school):
    load(sessions, small_school)
    plan(sessions)
    # Published Wednesday of week 48, but imported after that edition was planned.
    load(sessions, document(posts=[post("late", "g5", "2026-11-25T14:00:00+01:00")]))
    load(sessions, document(posts=[post("m9", "g5", "2026-12-01T09:00:00+01:00")]))
    plan(sessions, NEXT_CUTOFF)
    assert outcome(sessions, NEXT_CUTOFF)["p1"][1] == ["late", "m9"]
    assert "late" not in outcome(sessions)["p1"][1]


def test_consecutive_editions_neither_overlap_nor_leave_a_gap(sessions, small_school):
    # Exactly at the cutoff belongs to this week; one second later to the next.
    small_school["posts"] = [
        post("edge", "g5", "2026-11-27T16:00:00+01:00"),
        post("after", "g5", "2026-11-27T16:00:01+01:00"),
    ]
    load(sessions, small_school)
    plan(sessions)
    plan(sessions, NEXT_CUTOFF)
    assert outcome(sessions)["p1"][1] == ["edge"]
    assert outcome(sessions, NEXT_CUTOFF)["p1"][1] == ["after"]


def test_posts_before_the_first_edition_are_history(sessions, small_school):
    small_school["posts"].append(post("old", "g5", "2026-11-13T10:00:00+01:00"))
    load(sessions, small_school)
    plan(sessions)
    plan(sessions, NEXT_CUTOFF)
    assert "old" not in outcome(sessions)["p1"][1]
    assert "old" not in outcome(sessions, NEXT_CUTOFF)["p1"][1]


def test_shared_address_gets_one_mail_with_the_union(sessions, small_school):
    small_school["guardians"].append(guardian("p6", ["c2"], email="P1@Ouders.Example", locale="en"))
    load(sessions, small_school)
    plan(sessions)
    with sessions() as session:
        edition = find_edition(session, "s1", CUTOFF)
        lines = {line.guardian_id: line for line in edition_status(session, edition)}
        deliveries = session.scalars(
            select(Delivery).where(Delivery.address == "p1@ouders.example")
        ).all()
    assert len(deliveries) == 1
    assert sorted(deliveries[0].post_ids) == ["m1", "m2", "m3"]
    assert lines["p1"].delivery_id == lines["p6"].delivery_id == deliveries[0].id
    # nl and en disagree: the chrome falls back to the school's language
    assert deliveries[0].locale == "nl"


def test_a_week_without_news_sends_nothing_unless_send_empty(sessions, small_school):
    small_school["posts"] = [post("m2", "g7", "2026-11-25T09:00:00+01:00")]
    load(sessions, small_school)
    plan(sessions)
    assert outcome(sessions)["p1"] == ("skipped:no_posts", [])


def test_send_empty_school_mails_an_empty_week(sessions, small_school):
    small_school["schools"][0]["send_empty"] = True
    small_school["posts"] = [post("m2", "g7", "2026-11-25T09:00:00+01:00")]
    load(sessions, small_school)
    plan(sessions)
    assert outcome(sessions)["p1"] == ("queued", [])


def test_suppressed_address_is_skipped(sessions, small_school):
    load(sessions, small_school)
    with sessions() as session, session.begin():
        session.add(Suppression(address="p2@ouders.example", reason="550 5.1.1 no such user"))
    plan(sessions)
    assert outcome(sessions)["p2"][0] == "skipped:suppressed"


def test_opted_out_parent_gets_nothing_even_without_portal_account(sessions, small_school):
    load(sessions, small_school)
    with sessions() as session, session.begin():
        parent = session.get_one(Guardian, "p1")
        parent.local_choice_at = parent.opted_out_at = parse_instant("2026-11-20T10:00", ZONE)
    plan(sessions)
    assert outcome(sessions)["p1"][0] == "skipped:opted_out"


def test_local_choice_wins_until_the_portal_sends_a_newer_preference(sessions, small_school):
    load(sessions, small_school)
    with sessions() as session, session.begin():
        parent = session.get_one(Guardian, "p3")  # the portal says: app
        parent.local_delivery = "newsletter"
        parent.local_choice_at = parse_instant("2026-11-20T10:00", ZONE)
    plan(sessions)
    assert outcome(sessions)["p3"][0] == "queued"

    small_school["guardians"][2]["preferences_updated_at"] = "2026-11-30T10:00:00+01:00"
    load(sessions, small_school)
    plan(sessions, NEXT_CUTOFF)
    assert outcome(sessions, NEXT_CUTOFF)["p3"][0] == "skipped:app"


def test_guardian_added_mid_year_gets_no_backlog(sessions, small_school):
    load(sessions, small_school)
    plan(sessions)
    load(
        sessions,
        document(
            guardians=[guardian("new", ["c1"])],
            posts=[post("m9", "g5", "2026-12-01T09:00:00+01:00")],
        ),
    )
    plan(sessions, NEXT_CUTOFF)
    assert outcome(sessions, NEXT_CUTOFF)["new"] == ("queued", ["m9"])


def test_holiday_cutoff_plans_no_edition_and_posts_roll_over(sessions, small_school):
    small_school["schools"][0]["holidays"] = [
        {"start": "2026-11-23", "end": "2026-11-27", "name": "Herfstvakantie"}
    ]
    load(sessions, small_school)
    assert plan(sessions).edition.status is EditionStatus.SKIPPED_HOLIDAY
    plan(sessions, NEXT_CUTOFF)
    assert outcome(sessions, NEXT_CUTOFF)["p1"][1] == ["m1", "m3"]


def test_latest_cutoff_is_friday_1600_local_across_dst():
    winter = latest_cutoff(
        parse_instant("2026-11-22T12:00", ZONE), weekday=4, clock="16:00", zone=ZONE
    )
    summer = latest_cutoff(
        parse_instant("2026-07-05T12:00", ZONE), weekday=4, clock="16:00", zone=ZONE
    )
    assert winter.isoformat() == "2026-11-20T15:00:00+00:00"
    assert summer.isoformat() == "2026-07-03T14:00:00+00:00"


@pytest.mark.parametrize("guardians", [10, 200])
def test_plan_is_set_based_whatever_the_number_of_guardians(sessions, engine, guardians):
    doc = document(
        schools=[school()],
        groups=[group("gs", kind="school"), group("g5")],
        children=[child(f"c{i}", ["g5"]) for i in range(guardians)],
        guardians=[guardian(f"p{i}", [f"c{i}"]) for i in range(guardians)],
        posts=[post("m1", "g5", "2026-11-24T10:15:00+01:00")],
    )
    load(sessions, doc)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        plan(sessions)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Eight statements, whatever the size: at most 20 per 1,000 guardians from 400 a school.
    assert len(statements) <= 8, statements
