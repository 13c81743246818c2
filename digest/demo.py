"""A realistic Dutch demo school and a week of its news, run end to end into the outbox."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from digest.db import session_factory, upgrade
from digest.ingest import import_document
from digest.periods import latest_cutoff
from digest.settings import Settings, without_password
from digest.status import edition_status, summarize
from digest.worker import run_loop
from scheduler.jobs import run_edition

SCHOOL_ID = "demo-klimop"
ZONE = "Europe/Amsterdam"
CLASSES = ["Groep 1-2", "Groep 3", "Groep 4", "Groep 5", "Groep 6", "Groep 7", "Groep 8"]
FIRST_NAMES = [
    "Sem",
    "Noah",
    "Emma",
    "Julia",
    "Liam",
    "Mila",
    "Daan",
    "Tess",
    "Finn",
    "Sara",
    "Yusuf",
    "Nora",
    "Levi",
    "Zoë",
    "Mohammed",
    "Lotte",
    "Bram",
    "Fenna",
    "Ayoub",
    "Evi",
    "Jesse",
    "Lina",
    "Thijs",
    "Roos",
    "Milan",
    "Amira",
    "Luuk",
    "Isa",
    "Ravi",
    "Fleur",
]
SURNAMES = [
    "de Vries",
    "Jansen",
    "Yilmaz",
    "Bakker",
    "El Amrani",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "Kaya",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Dijk",
    "Öztürk",
    "Dekker",
    "Brouwer",
    "de Wit",
]
TEACHERS = [
    "Juf Anne",
    "Meester Ruben",
    "Juf Samira",
    "Meester Koen",
    "Juf Ilse",
    "Juf Marloes",
    "Meester Jeroen",
]


def demo_document(cutoff: datetime, seed: int = 2026) -> dict[str, Any]:
    """The portal export of OBS De Klimop for the week ending at ``cutoff`` (deterministic)."""
    rng = random.Random(seed)
    zone = ZoneInfo(ZONE)
    local_cutoff = cutoff.astimezone(zone)
    monday = local_cutoff - timedelta(days=local_cutoff.weekday())
    week = f"{local_cutoff.isocalendar().week:02d}"

    def moment(day: int, hour: int, minute: int = 0) -> str:
        # Day 0 is the Monday of the cutoff's week; the hour is local (DST-safe via astimezone).
        naive = (monday + timedelta(days=day)).replace(tzinfo=None)
        local = naive.replace(hour=hour, minute=minute, second=0, microsecond=0, tzinfo=zone)
        return local.isoformat()

    groups = [
        {"id": "demo-school", "school_id": SCHOOL_ID, "name": "OBS De Klimop", "kind": "school"},
        {
            "id": "demo-mr",
            "school_id": SCHOOL_ID,
            "name": "Medezeggenschapsraad",
            "kind": "committee",
        },
    ]
    groups += [
        {"id": f"demo-g{i}", "school_id": SCHOOL_ID, "name": name, "kind": "class"}
        for i, name in enumerate(CLASSES, start=1)
    ]

    children: list[dict[str, Any]] = []
    guardians: list[dict[str, Any]] = []
    consents = ["email"] * 6 + ["public"] * 2 + ["portal", "none"]
    preferences = ["app"] * 5 + ["email"] * 2 + ["newsletter"] * 3
    for n in range(40):
        group_id = f"demo-g{n % len(CLASSES) + 1}"
        surname = rng.choice(SURNAMES)
        children.append(
            {
                "id": f"demo-c{n}",
                "school_id": SCHOOL_ID,
                "first_name": rng.choice(FIRST_NAMES),
                "group_ids": [group_id],
                "photo_consent": rng.choice(consents),
            }
        )
        for parent in range(1 if n % 3 == 0 else 2):
            gid = f"demo-p{n}-{parent}"
            first = rng.choice(FIRST_NAMES)
            guardians.append(
                {
                    "id": gid,
                    "school_id": SCHOOL_ID,
                    "name": f"{first} {surname}",
                    "email": f"{first.lower()}.{gid[5:]}@ouders.example".replace("ë", "e"),
                    "locale": "en" if rng.random() < 0.15 else "nl",
                    "delivery": rng.choice(preferences),
                    "portal_account": rng.random() > 0.12,
                    "child_ids": [f"demo-c{n}"],
                    "group_ids": ["demo-mr"] if n in (4, 17) and parent == 0 else [],
                }
            )
    guardians[3].update(email=None, delivery="newsletter")  # the school has no address for them
    guardians[9]["email"] = guardians[8]["email"].upper()  # two parents sharing one address
    guardians[8]["delivery"] = guardians[9]["delivery"] = "newsletter"

    posts = [
        {
            "id": f"demo-{week}-school-1",
            "group_id": "demo-school",
            "author": "Directeur Petra",
            "kind": "event",
            "title": "Sinterklaasviering op school",
            "body_html": "<p>Op <strong>vrijdag</strong> komt Sinterklaas op bezoek. De kinderen "
            "mogen verkleed komen. Ouders zijn welkom op het schoolplein.</p>",
            "published_at": moment(1, 8, 30),
            "event": {
                "starts_at": moment(11, 8, 30),
                "ends_at": moment(11, 10, 0),
                "location": "Schoolplein",
            },
        },
        {
            "id": f"demo-{week}-mr-1",
            "group_id": "demo-mr",
            "author": "Voorzitter MR",
            "kind": "message",
            "title": "Vergadering MR",
            "body_html": "<p>De notulen van de vorige vergadering staan in de bijlage.</p>",
            "published_at": moment(2, 20, 0),
        },
    ]
    kinds = ["photos", "message", "help", "meeting", "link"]
    for i, name in enumerate(CLASSES, start=1):
        for j in range(1 + (i % 3)):
            kind = kinds[(i + j) % len(kinds)]
            post: dict[str, Any] = {
                "id": f"demo-{week}-g{i}-{j}",
                "group_id": f"demo-g{i}",
                "author": TEACHERS[i - 1],
                "kind": kind,
                "title": {
                    "photos": f"Foto's van de week in {name}",
                    "message": "Nieuws uit de klas",
                    "help": "Hulp gezocht bij de excursie",
                    "meeting": "Inschrijven voor de oudergesprekken",
                    "link": "Oefenen met tafels thuis",
                }[kind],
                "body_html": "<p>Deze week hebben we gewerkt aan het thema <em>herfst</em>. "
                "De kinderen hebben bladeren verzameld en een tentoonstelling "
                "gemaakt.</p><ul><li>Maandag: gym</li><li>Woensdag: "
                "bibliotheek</li></ul>",
                "published_at": moment(rng.randint(0, 4), rng.randint(8, 15), 5 * j),
                "url": f"https://portal.example/posts/{i}-{j}",
            }
            class_children = [c["id"] for c in children if c["group_ids"] == [f"demo-g{i}"]]
            if kind == "photos":
                post["media"] = [
                    {
                        "id": f"demo-{week}-f{i}-{k}",
                        "type": "image",
                        "url": f"https://portal.example/media/{i}-{k}.jpg",
                        "alt": f"Kinderen van {name} aan het werk",
                        "child_ids": rng.sample(class_children, k=min(2, len(class_children))),
                    }
                    for k in range(4)
                ]
            if kind == "help":
                post["help"] = {
                    "signup_url": "https://portal.example/hulp/1",
                    "needed_at": moment(12, 9),
                    "what": "Drie ouders om te rijden",
                }
            if kind == "meeting":
                post["meeting"] = {
                    "signup_url": "https://portal.example/gesprekken",
                    "deadline": moment(10, 17),
                }
            if kind == "link":
                post["links"] = [{"url": "https://www.rekenweb.nl/", "title": "Rekenweb"}]
            posts.append(post)

    return {
        "version": 1,
        "schools": [
            {
                "id": SCHOOL_ID,
                "name": "OBS De Klimop",
                "timezone": ZONE,
                "locale": "nl",
                "digest_weekday": "friday",
                "digest_time": "16:00",
                "reply_to": "info@klimop.example",
                "portal_url": "https://portal.example/",
            }
        ],
        "groups": groups,
        "children": children,
        "guardians": guardians,
        "posts": posts,
    }


def run_demo(
    engine: Engine, settings: Settings, at: datetime, *, echo: Callable[[str], None] = print
) -> dict[str, int]:
    """Migrate, import the demo school, plan and send its edition; print where to look."""
    upgrade(engine)
    sessions = session_factory(engine)
    cutoff = latest_cutoff(at, weekday=4, clock="16:00", zone=ZONE)
    with sessions() as session, session.begin():
        import_document(session, demo_document(cutoff))
    run = run_loop(run_edition(sessions, settings, SCHOOL_ID, at), settings)
    result = run.plan
    with sessions() as session:
        lines = edition_status(session, result.edition)
    summary = summarize(lines)
    local = cutoff.astimezone(ZoneInfo(ZONE))
    echo(f"OBS De Klimop, edition of the week ending {local:%A %d %B %Y %H:%M} ({ZONE})")
    echo(f"{len(lines)} guardians considered:")
    for key, count in summary.items():
        echo(f"  {key:<22} {count}")
    echo(f"mail went to {without_password(settings.mail_url)}")
    when = f"{local:%Y-%m-%dT%H:%M}"
    echo(f"see every guardian:  digest status --school {SCHOOL_ID} --at {when}")
    newsletter = next((line for line in lines if line.status == "sent"), None)
    if newsletter:
        echo(
            f"look at one mail:    digest preview --guardian {newsletter.guardian_id} "
            f"--at {when} --output mail.html"
        )
    return summary
