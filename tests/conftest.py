"""Shared fixtures: a migrated store on SQLite and on the machine's PostgreSQL, and factories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

# A real SMTP server with injectable faults, for every test file that asks for it.
from smtp_server import server_tls, smtp_server  # noqa: F401
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from digest.db import make_engine, session_factory, upgrade
from digest.models import Base
from digest.settings import load_settings
from digest.worker import run_loop

T = TypeVar("T")

PG_ADMIN_URL = os.environ.get("DIGEST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["uvloop", "asyncio"])
def each_event_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Once on uvloop, as the delivering processes run by default, once on asyncio's own loop
    (``DIGEST_EVENT_LOOP=asyncio``): for the modules whose tests send through ``on_event_loop``."""
    monkeypatch.setenv("DIGEST_EVENT_LOOP", request.param)
    return str(request.param)


def on_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the loop ``DIGEST_EVENT_LOOP`` names, as ``digest worker`` would."""
    return run_loop(main, load_settings())


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database created for this test run, migrated, and dropped at its end."""
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for these tests: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """A migrated, empty store; every test that takes it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'digest.db'}"
        engine = make_engine(url)
        upgrade(engine)
    else:
        url = request.getfixturevalue("pg_url")
        engine = make_engine(url)
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            # The scheduler's job store (APScheduler's own table, not in our metadata).
            conn.execute(text("DROP TABLE IF EXISTS apscheduler_jobs"))
    yield engine
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    engine.dispose()
    assert checked_out == 0, f"{checked_out} database connection(s) left checked out"


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def db_url(engine: Engine) -> str:
    """The store's URL, for tests that run the CLI in a subprocess."""
    return engine.url.render_as_string(hide_password=False)


def cli_environment(**settings: str) -> dict[str, str]:
    """The environment of a ``digest`` subprocess: this one's without any ``DIGEST_`` setting,
    the working tree's code on the path (however the package is installed), and ``settings``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    environment.update(settings)
    return environment


# --- factories of portal documents (the v1 contract of DESIGN.md) --------------------------


def school(id: str = "s1", **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "name": "De Schakel",
        "timezone": "Europe/Amsterdam",
        "locale": "nl",
        "digest_weekday": "friday",
        "digest_time": "16:00",
        "reply_to": "info@schakel.example",
        **fields,
    }


def group(id: str, school_id: str = "s1", kind: str = "class", **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "school_id": school_id,
        "name": fields.pop("name", id),
        "kind": kind,
        **fields,
    }


def child(
    id: str, group_ids: list[str], school_id: str = "s1", consent: str = "email", **fields: Any
) -> dict[str, Any]:
    return {
        "id": id,
        "school_id": school_id,
        "first_name": fields.pop("first_name", id.title()),
        "group_ids": group_ids,
        "photo_consent": consent,
        **fields,
    }


def guardian(
    id: str,
    child_ids: list[str],
    school_id: str = "s1",
    delivery: str = "newsletter",
    email: str | None = "",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "id": id,
        "school_id": school_id,
        "name": fields.pop("name", f"Ouder {id}"),
        "email": f"{id}@ouders.example" if email == "" else email,
        "locale": fields.pop("locale", "nl"),
        "delivery": delivery,
        "portal_account": fields.pop("portal_account", True),
        "child_ids": child_ids,
        "group_ids": fields.pop("group_ids", []),
        **fields,
    }


def post(id: str, group_id: str, published_at: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "group_id": group_id,
        "author": fields.pop("author", "Juf Anne"),
        "kind": fields.pop("kind", "message"),
        "title": fields.pop("title", f"Bericht {id}"),
        "body_html": fields.pop("body_html", f"<p>Tekst van {id}.</p>"),
        "published_at": published_at,
        "deleted_at": fields.pop("deleted_at", None),
        "media": fields.pop("media", []),
        **fields,
    }


def document(**arrays: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, **arrays}


@pytest.fixture
def small_school() -> dict[str, Any]:
    """One school: a whole-school group, two classes, a committee, five guardians, a week of posts.

    The week ends Friday 27 November 2026 16:00 Amsterdam time (15:00 UTC).
    """
    return document(
        schools=[school()],
        groups=[
            group("gs", kind="school", name="De Schakel"),
            group("g5", name="Groep 5"),
            group("g7", name="Groep 7"),
            group("mr", kind="committee", name="MR"),
        ],
        children=[child("c1", ["g5"]), child("c2", ["g7"]), child("c3", ["g5"])],
        guardians=[
            guardian("p1", ["c1"], portal_account=False, delivery="app"),
            guardian("p2", ["c2"]),
            guardian("p3", ["c3"], delivery="app"),
            guardian("p4", ["c3"], delivery="email"),
            guardian("p5", ["c1", "c2"], email=None),
        ],
        posts=[
            post("m1", "g5", "2026-11-24T10:15:00+01:00", title="Excursie naar het bos"),
            post("m2", "g7", "2026-11-25T09:00:00+01:00", title="Spreekbeurten"),
            post("m3", "gs", "2026-11-26T12:00:00+01:00", title="Sinterklaas op school"),
            post("m4", "mr", "2026-11-26T13:00:00+01:00", title="Notulen MR"),
        ],
    )
