"""Realistic school boards for the benchmarks, deterministic by seed: a portal export (contract v1).

Each school has a whole-school group and 8 classes; families of 1–3 children (siblings in any
class) and 1–2 guardians; preferences 70 % app, 15 % email per post, 15 % newsletter, a few
guardians without an address or without a portal account (the newsletter is their floor), a few
English and other-language parents; and a week of news up to the cutoff: 1–3 posts per class and
1–2 for the whole school, half with photos (consent varies per child), some events, meetings,
calls for help and links, and now and then a long post.

    python bench/generate.py --schools 2 --guardians 800 --seed 7 > board.json

``board(schools, guardians, seed=…)`` is the same from Python; ``school_week(seed)`` one school;
``mail_contents(document, settings)`` imports a document into a scratch SQLite store, plans each
school's edition and returns what every queued newsletter says (``MailContent``), as sending would.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from digest.content import MailContent
    from digest.settings import Settings

ZONE = ZoneInfo("Europe/Amsterdam")
# Friday 27 November 2026 16:00 in Amsterdam: the default cutoff of the generated week.
CUTOFF = datetime(2026, 11, 27, 16, 0, tzinfo=ZONE)
CLASSES = 8

_FIRST = [
    "Anne", "Sem", "Fatma", "Daan", "Noor", "Mohamed", "Julia", "Lucas", "Yara", "Bram", "Émilie",
    "Zoë", "Ahmed", "Lotte", "Milan", "Sara", "Ayşe", "Jesse", "Iris", "Thijs", "Nour", "Luuk",
]  # fmt: skip
_LAST = [
    "de Vries", "Jansen", "Yilmaz", "Bakker", "El Amrani", "Visser", "Smit", "de Jong", "Öztürk",
    "Mulder", "Bos", "Vos", "Peters", "Hendriks", "van Dijk", "Dekker", "Brouwer", "Kaya",
]  # fmt: skip
_TITLES = [
    "Deze week in {group}", "Excursie naar het bos", "Spreekbeurten", "Gymles verplaatst",
    "Luizencontrole na de vakantie", "Schoolreis: de laatste informatie", "Wat hebben we geleerd?",
    "Projectweek \u201cDe ruimte\u201d", "Juf Anne is jarig!", "Oudergesprekken", "Kerstviering",
]  # fmt: skip
_SENTENCES = [
    "Deze week hebben we gewerkt aan het thema herfst.",
    "De kinderen hebben prachtige werkstukken gemaakt over bladeren en paddenstoelen.",
    "Vergeet niet om morgen laarzen en een regenjas mee te geven.",
    "Op woensdag gaan we naar de bibliotheek; neem je pasje mee.",
    "We zoeken nog twee ouders die willen rijden naar het museum.",
    "Dank aan iedereen die heeft geholpen bij de sportdag!",
    "De rekentoets wordt een week later afgenomen dan gepland.",
    "Wilt u de toestemmingsformulieren uiterlijk vrijdag inleveren?",
]
_WHERE = ["Gymzaal", "Kagerbos", "Pauluskerk, Kerkstraat 1", "Speelplein", "Bibliotheek"]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _body(rng: random.Random, *, long: bool) -> str:
    paragraphs = rng.randint(12, 20) if long else rng.randint(1, 3)
    parts = []
    for _ in range(paragraphs):
        text = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(1, 4)))
        parts.append(f"<p>{text}</p>")
    if rng.random() < 0.3:
        items = "".join(f"<li>{rng.choice(_SENTENCES)}</li>" for _ in range(rng.randint(2, 4)))
        parts.insert(1, f"<ul>{items}</ul>")
    if rng.random() < 0.2:
        parts.append('<p>Meer op <a href="https://www.school.example/nieuws">de website</a>.</p>')
    return "".join(parts)


def _school(
    rng: random.Random, number: int, guardians: int, cutoff: datetime
) -> dict[str, list[dict[str, Any]]]:
    """One school's objects, ids prefixed ``s<number>-``."""
    sid = f"s{number:04d}"
    name = rng.choice(["De Linde", "De Schakel", "Het Kompas", "De Regenboog"])
    school = {
        "id": sid,
        "name": f"Basisschool {name} {number}",
        "timezone": "Europe/Amsterdam",
        "locale": "nl",
        "digest_weekday": "friday",
        "digest_time": "16:00",
        "reply_to": f"info@{sid}.school.example",
        "portal_url": f"https://portal.example/{sid}",
    }
    groups = [{"id": f"{sid}-all", "school_id": sid, "name": school["name"], "kind": "school"}]
    groups += [
        {"id": f"{sid}-c{k}", "school_id": sid, "name": f"Groep {k}", "kind": "class"}
        for k in range(1, CLASSES + 1)
    ]
    children: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    while len(people) < guardians:
        kids = []
        for _ in range(rng.choices((1, 2, 3), weights=(50, 35, 15))[0]):
            cid = f"{sid}-k{len(children) + 1:05d}"
            consent = rng.choices(("email", "portal", "none", "public"), weights=(80, 10, 5, 5))[0]
            children.append(
                {
                    "id": cid,
                    "school_id": sid,
                    "first_name": rng.choice(_FIRST),
                    "group_ids": [f"{sid}-c{rng.randint(1, CLASSES)}"],
                    "photo_consent": consent,
                }
            )
            kids.append(cid)
        for _ in range(rng.choices((1, 2), weights=(30, 70))[0]):
            if len(people) >= guardians:
                break
            gid = f"{sid}-g{len(people) + 1:05d}"
            delivery = rng.choices(("app", "email", "newsletter"), weights=(70, 15, 15))[0]
            email = None if rng.random() < 0.03 else f"{gid}@ouders.example"
            locale = rng.choices(("nl", "en", "tr", "ar", "nl-BE"), weights=(88, 7, 2, 2, 1))[0]
            people.append(
                {
                    "id": gid,
                    "school_id": sid,
                    "name": _person(rng),
                    "email": email,
                    "locale": locale,
                    "delivery": delivery,
                    "portal_account": rng.random() >= 0.02,
                    "child_ids": kids,
                }
            )
    posts = _posts(rng, sid, groups, children, cutoff)
    return {
        "schools": [school],
        "groups": groups,
        "children": children,
        "guardians": people,
        "posts": posts,
    }


def _posts(
    rng: random.Random,
    sid: str,
    groups: list[dict[str, Any]],
    children: list[dict[str, Any]],
    cutoff: datetime,
) -> list[dict[str, Any]]:
    local = cutoff.astimezone(ZONE)
    monday = (local - timedelta(days=local.weekday())).replace(hour=8, minute=0)
    in_class: dict[str, list[str]] = {}
    for kid in children:
        in_class.setdefault(kid["group_ids"][0], []).append(kid["id"])
    posts: list[dict[str, Any]] = []
    for group in groups:
        count = rng.randint(1, 2) if group["kind"] == "school" else rng.randint(1, 3)
        for _ in range(count):
            pid = f"{sid}-p{len(posts) + 1:04d}"
            # Monday 08:00 to Friday 14:00: always inside the edition ending at the cutoff.
            published = monday + timedelta(minutes=rng.randint(0, 4 * 24 * 60 + 6 * 60))
            kind = rng.choices(
                ("message", "photos", "event", "link", "meeting", "help"),
                weights=(45, 30, 10, 6, 4, 5),
            )[0]
            post: dict[str, Any] = {
                "id": pid,
                "group_id": group["id"],
                "author": rng.choice(["Juf ", "Meester ", "Directeur "]) + rng.choice(_FIRST),
                "kind": kind,
                "title": rng.choice(_TITLES).format(group=group["name"]),
                "body_html": _body(rng, long=rng.random() < 0.05),
                "url": f"https://portal.example/{sid}/posts/{pid}",
                "published_at": published.isoformat(),
            }
            if kind == "photos" or rng.random() < 0.2:
                kids = in_class.get(group["id"]) or [c["id"] for c in children[:30]]
                post["media"] = [
                    {
                        "id": f"{pid}-m{m}",
                        "type": "video" if rng.random() < 0.05 else "image",
                        "url": f"https://media.portal.example/{pid}/{m}.jpg",
                        "poster_url": f"https://media.portal.example/{pid}/{m}-still.jpg",
                        "alt": rng.choice(["", "Kinderen op het plein", "Aan het werk"]),
                        "child_ids": rng.sample(kids, min(len(kids), rng.randint(1, 3))),
                    }
                    for m in range(1, rng.randint(2, 12))
                ]
            if kind == "event":
                starts = (cutoff + timedelta(days=rng.randint(3, 20))).replace(minute=0)
                post["event"] = {
                    "starts_at": starts.isoformat(),
                    "ends_at": (starts + timedelta(hours=rng.randint(1, 3))).isoformat(),
                    "location": rng.choice(_WHERE),
                }
            if kind == "link":
                post["links"] = [
                    {"url": "https://www.bibliotheek.example/leestips", "title": "Leestips"},
                    {"url": "https://www.jeugdjournaal.example/", "title": ""},
                ]
            if kind == "meeting":
                post["meeting"] = {
                    "signup_url": f"https://portal.example/{sid}/gesprekken",
                    "deadline": (cutoff + timedelta(days=7)).isoformat(),
                }
            if kind == "help":
                post["help"] = {
                    "signup_url": f"https://portal.example/{sid}/hulp",
                    "needed_at": (cutoff + timedelta(days=10)).isoformat(),
                    "what": "Kraampjes opbouwen",
                }
            posts.append(post)
    return posts


def board(
    schools: int, guardians: int, *, seed: int = 1, cutoff: datetime = CUTOFF
) -> dict[str, Any]:
    """A board of ``schools`` schools with ``guardians`` guardians in all, news up to ``cutoff``."""
    rng = random.Random(seed)
    document: dict[str, Any] = {
        "version": 1,
        "schools": [],
        "groups": [],
        "children": [],
        "guardians": [],
        "posts": [],
    }
    base, extra = divmod(guardians, schools)
    for number in range(1, schools + 1):
        objects = _school(rng, number, base + (number <= extra), cutoff)
        for key, items in objects.items():
            document[key].extend(items)
    return document


def school_week(seed: int, *, guardians: int = 350, cutoff: datetime = CUTOFF) -> dict[str, Any]:
    """One generated school with a week of news: what the tests' generated weeks use."""
    return board(1, guardians, seed=seed, cutoff=cutoff)


def mail_contents(
    document: dict[str, Any], settings: Settings, *, cutoff: datetime = CUTOFF
) -> list[MailContent]:
    """Every queued newsletter of ``document``'s editions ending at ``cutoff``, composed."""
    from sqlalchemy import select

    from digest.compose import compose_delivery
    from digest.db import make_engine, session_factory, upgrade
    from digest.ingest import import_document
    from digest.links import Links
    from digest.models import Delivery, DeliveryStatus
    from digest.plan import plan_edition

    with TemporaryDirectory(prefix="digest-week-") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'week.db'}")
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session, session.begin():
            import_document(session, document, now=cutoff)
        for school in document["schools"]:
            with sessions() as session, session.begin():
                plan_edition(session, school["id"], cutoff)
        links = Links(settings)
        with sessions() as session:
            rows = session.scalars(
                select(Delivery)
                .where(Delivery.status == DeliveryStatus.QUEUED)
                .order_by(Delivery.id)
            )
            contents = [compose_delivery(session, links, row) for row in rows]
        engine.dispose()
    return contents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schools", type=int, default=1)
    parser.add_argument("--guardians", type=int, default=350, help="in all, spread over schools")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cutoff", type=datetime.fromisoformat, default=CUTOFF)
    args = parser.parse_args(argv)
    json.dump(board(args.schools, args.guardians, seed=args.seed, cutoff=args.cutoff), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
