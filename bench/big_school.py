"""A large school for benchmarks: every guardian wants the newsletter and has an address.

``school_document(guardians, cutoff)`` is a portal export (contract v1) of one school with
``guardians`` newsletter guardians ``g00001@ouders.example`` … in a handful of classes, two
guardians per child, and a week of posts that all fall inside the edition ending at ``cutoff``,
so planning that edition queues exactly one mail per guardian.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

SCHOOL_ID = "bench-school"
ZONE = "Europe/Amsterdam"
CLASSES = 8


def guardian_address(number: int) -> str:
    """The address of guardian ``number`` (1-based), as the portal sends it."""
    return f"g{number:05d}@ouders.example"


def latest_friday_cutoff(now: datetime) -> datetime:
    """The school's default cutoff (Friday 16:00 Amsterdam) at or before ``now``, aware."""
    local = now.astimezone(ZoneInfo(ZONE))
    friday = local - timedelta(days=(local.weekday() - 4) % 7)
    cutoff = datetime(friday.year, friday.month, friday.day, 16, 0, tzinfo=ZoneInfo(ZONE))
    if cutoff > local:
        cutoff -= timedelta(days=7)
    return cutoff


def school_document(guardians: int, cutoff: datetime) -> dict[str, Any]:
    """A school of ``guardians`` newsletter guardians with news in the week up to ``cutoff``."""
    zone = ZoneInfo(ZONE)
    local_cutoff = cutoff.astimezone(zone)
    monday = (local_cutoff - timedelta(days=local_cutoff.weekday())).date()

    def moment(day: int, hour: int) -> str:
        # Monday to Thursday of the cutoff's week: always inside the edition's period.
        day_date = monday + timedelta(days=day)
        return datetime(day_date.year, day_date.month, day_date.day, hour, tzinfo=zone).isoformat()

    groups = [{"id": "bench-all", "school_id": SCHOOL_ID, "name": "De Linde", "kind": "school"}]
    groups += [
        {"id": f"bench-c{k}", "school_id": SCHOOL_ID, "name": f"Groep {k}", "kind": "class"}
        for k in range(1, CLASSES + 1)
    ]
    children_count = (guardians + 1) // 2
    children = [
        {
            "id": f"bench-k{n:05d}",
            "school_id": SCHOOL_ID,
            "first_name": f"Kind {n}",
            "group_ids": [f"bench-c{n % CLASSES + 1}"],
            "photo_consent": "email",
        }
        for n in range(1, children_count + 1)
    ]
    people = [
        {
            "id": f"bench-g{n:05d}",
            "school_id": SCHOOL_ID,
            "name": f"Ouder {n}",
            "email": guardian_address(n),
            "locale": "nl",
            "delivery": "newsletter",
            "portal_account": True,
            "child_ids": [f"bench-k{(n + 1) // 2:05d}"],
        }
        for n in range(1, guardians + 1)
    ]
    posts = [
        {
            "id": "bench-p-all",
            "group_id": "bench-all",
            "author": "Directeur Petra",
            "kind": "message",
            "title": "Nieuws van de directie",
            "body_html": "<p>Volgende week is de <strong>studiedag</strong>: de kinderen zijn "
            "vrij. De schoolfotograaf komt op donderdag.</p>",
            "published_at": moment(0, 9),
        }
    ]
    posts += [
        {
            "id": f"bench-p-c{k}",
            "group_id": f"bench-c{k}",
            "author": "Juf Anne",
            "kind": "message",
            "title": f"Deze week in groep {k}",
            "body_html": "<p>We hebben gewerkt aan het thema <em>herfst</em>.</p>"
            "<ul><li>Maandag: gym</li><li>Woensdag: bibliotheek</li></ul>",
            "published_at": moment(k % 4, 10 + k % 5),
        }
        for k in range(1, CLASSES + 1)
    ]
    school = {
        "id": SCHOOL_ID,
        "name": "Basisschool De Linde",
        "timezone": ZONE,
        "locale": "nl",
        "digest_weekday": "friday",
        "digest_time": "16:00",
        "reply_to": "info@linde.example",
    }
    return {
        "version": 1,
        "schools": [school],
        "groups": groups,
        "children": children,
        "guardians": people,
        "posts": posts,
    }
