"""Property: for random schools, memberships and posts, each address gets exactly its news."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from conftest import child, document, group, guardian, post, school
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from digest.db import make_engine, session_factory, upgrade
from digest.ingest import import_document
from digest.models import Base, Delivery, DeliveryStatus
from digest.periods import parse_instant
from digest.plan import plan_edition

CUTOFF = parse_instant("2026-11-27T16:00", "Europe/Amsterdam")
ADDRESSES = [
    "a@ouders.example",
    "A@Ouders.Example",
    "b@ouders.example",
    "c@ouders.example",
    "d@ouders.example",
    None,
]


@st.composite
def schools(draw: st.DrawFn) -> dict[str, Any]:
    """Two schools with random classes, committees, children, guardians and a week of posts."""
    doc: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("schools", "groups", "children", "guardians", "posts")
    }
    for s in ("s1", "s2"):
        doc["schools"].append(school(s))
        groups = [f"{s}-all", *(f"{s}-g{i}" for i in range(draw(st.integers(1, 3)))), f"{s}-mr"]
        doc["groups"] += [
            group(groups[0], school_id=s, kind="school"),
            *(group(g, school_id=s) for g in groups[1:-1]),
            group(groups[-1], school_id=s, kind="committee"),
        ]
        classes = groups[1:-1]
        children = [f"{s}-c{i}" for i in range(draw(st.integers(1, 5)))]
        for c in children:
            doc["children"].append(
                child(
                    c,
                    draw(st.lists(st.sampled_from(classes), max_size=2, unique=True)),
                    school_id=s,
                )
            )
        for i in range(draw(st.integers(1, 6))):
            doc["guardians"].append(
                guardian(
                    f"{s}-p{i}",
                    draw(st.lists(st.sampled_from(children), max_size=2, unique=True)),
                    school_id=s,
                    delivery=draw(st.sampled_from(["app", "email", "newsletter"])),
                    email=draw(st.sampled_from(ADDRESSES)),
                    portal_account=draw(st.booleans()),
                    group_ids=[groups[-1]] if draw(st.booleans()) else [],
                )
            )
    all_groups = [g["id"] for g in doc["groups"]]
    for i in range(draw(st.integers(0, 12))):
        hours = draw(st.integers(-24 * 9, 24 * 2))
        published = (CUTOFF + timedelta(hours=hours)).isoformat() if hours % 11 else None
        deleted = "2026-11-27T10:00:00+01:00" if draw(st.integers(0, 5)) == 0 else None
        doc["posts"].append(
            post(f"m{i}", draw(st.sampled_from(all_groups)), published, deleted_at=deleted)
        )
    return document(**doc)


def entitled(doc: dict[str, Any], school_id: str) -> dict[str, set[str]]:
    """The oracle: lower-cased address -> the posts its newsletter guardians may and must get."""
    class_groups = {c["id"]: set(c["group_ids"]) for c in doc["children"]}
    visible = {
        p["id"]: p["group_id"]
        for p in doc["posts"]
        if p["published_at"]
        and not p["deleted_at"]
        and CUTOFF - timedelta(days=7) < parse_instant(p["published_at"], "UTC") <= CUTOFF
    }
    result: dict[str, set[str]] = {}
    for g in doc["guardians"]:
        wants = g["delivery"] == "newsletter" or not g["portal_account"]
        if g["school_id"] != school_id or not g["email"] or not wants:
            continue
        groups = {f"{school_id}-all", *g["group_ids"]}
        for c in g["child_ids"]:
            groups |= class_groups[c]
        posts = {p for p, grp in visible.items() if grp in groups}
        result.setdefault(g["email"].lower(), set()).update(posts)
    return result


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=schools())
def test_no_address_gets_a_post_of_a_group_it_is_not_in_and_none_is_missing(tmp_path, doc):
    engine = make_engine(f"sqlite:///{tmp_path / 'property.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    try:
        with sessions() as session, session.begin():
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(delete(table))
            import_document(session, doc)
            for school_id in ("s1", "s2"):
                plan_edition(session, school_id, CUTOFF)
        with sessions() as session:
            planned: dict[str, dict[str, set[str]]] = {"s1": {}, "s2": {}}
            for d in session.scalars(select(Delivery)):
                planned[d.school_id][d.address] = (
                    set(d.post_ids) if d.status is DeliveryStatus.QUEUED else set()
                )
        for school_id in ("s1", "s2"):
            expected = entitled(doc, school_id)
            assert set(planned[school_id]) == set(expected)
            for address, posts in expected.items():
                assert planned[school_id][address] == posts, address
    finally:
        engine.dispose()
