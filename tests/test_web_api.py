"""The portal's API: the import (the same as ``digest import``), the preferences read-back, the
bearer token, and a schemathesis run over the OpenAPI document: no 5xx whatever it sends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import cli_environment
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from web_parents_support import API_TOKEN, load, make_app, web_settings, week_document

from digest.db import make_engine, session_factory, upgrade
from digest.links import Links
from digest.models import Base, utcnow
from digest.web.api import MAX_IMPORT_BYTES

MB = 1 << 20
PORTAL = "http://127.0.0.1:9"  # images are not fetched here
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PORTAL_TABLES = (
    "schools",
    "groups",
    "children",
    "guardians",
    "posts",
    "media",
    "events",
    "child_groups",
    "guardian_children",
    "guardian_groups",
    "media_children",
)


@pytest.fixture
def client(tmp_path: Path, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(make_app(web_settings(tmp_path), sessions)) as test_client:
        yield test_client


def cli_import(tmp_path: Path, db_url: str, doc: Any) -> subprocess.CompletedProcess[str]:
    """``digest import`` in a subprocess, as an operator runs it."""
    source = tmp_path / "export.json"
    source.write_text(json.dumps(doc))
    environment = cli_environment(DIGEST_DATABASE_URL=db_url)
    return subprocess.run(
        [sys.executable, "-m", "digest", "import", str(source)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def portal_rows(engine: Engine) -> dict[str, list[Any]]:
    """Every stored portal row, without the time of import, in a comparable order."""
    tables = Base.metadata.tables
    rows: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for name in PORTAL_TABLES:
            table = tables[name]
            found = [
                {k: v for k, v in row._mapping.items() if k != "ingested_at"}
                for row in conn.execute(select(table))
            ]
            rows[name] = sorted(found, key=repr)
    return rows


# --- import ----------------------------------------------------------------------------------


def test_an_import_through_the_api_stores_what_digest_import_stores(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    doc = week_document(PORTAL)
    answer = client.post("/api/v1/import", headers=AUTH, json=doc)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["counts"]["guardians"]["created"] == 3
    assert result["schools_changed"] == ["s1"]

    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli_engine = make_engine(cli_db)
    upgrade(cli_engine)
    done = cli_import(tmp_path, cli_db, doc)
    assert done.returncode == 0, done.stderr
    # The command prints the counts the API returns.
    for kind, counts in result["counts"].items():
        shown = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        assert f"{kind}: {shown or 'nothing'}" in done.stdout
    assert portal_rows(engine) == portal_rows(cli_engine)
    cli_engine.dispose()

    again = client.post("/api/v1/import", headers=AUTH, json=doc)
    assert again.status_code == 200
    assert not any(
        n
        for counts in again.json()["counts"].values()
        for w, n in counts.items()
        if w != "unchanged"
    )


def test_a_refused_document_names_every_field_as_digest_import_does(
    client: TestClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    doc = week_document(PORTAL)
    doc["guardians"][0]["delivery"] = "pigeon"
    doc["posts"][1]["group_id"] = "g9"
    answer = client.post("/api/v1/import", headers=AUTH, json=doc)
    assert answer.status_code == 422
    problems = [f"{p['path']}: {p['message']}" for p in answer.json()["problems"]]
    paths = [p["path"] for p in answer.json()["problems"]]
    assert "guardians[0].delivery" in paths
    assert "posts[1].group_id" in paths

    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli_engine = make_engine(cli_db)
    upgrade(cli_engine)
    done = cli_import(tmp_path, cli_db, doc)
    cli_engine.dispose()
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {line}" for line in problems]

    with sessions() as session:  # refused whole: nothing was written
        assert session.execute(select(Base.metadata.tables["schools"])).first() is None


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"{not json", ""),
        (b'{"version": 2}', "version"),
        (b"[]", ""),
        (b'{"version": 1, "schools": {}}', "schools"),
        # Found by the fuzzing below: an id the store cannot hold reached a query (a 500).
        (b'{"version": 1, "groups": [{"id": "\\u0000", "school_id": "s1"}]}', "groups[0].id"),
    ],
)
def test_a_bad_document_is_a_422_naming_where(client: TestClient, body: bytes, path: str) -> None:
    answer = client.post(
        "/api/v1/import", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == 422
    assert answer.json()["problems"][0]["path"] == path


def test_the_token_is_required(client: TestClient) -> None:
    doc = week_document(PORTAL)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": f"Bearer {API_TOKEN}x"},
    ):
        answer = client.post("/api/v1/import", headers=headers, json=doc)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert (
            client.get("/api/v1/preferences?since=2026-01-01T00:00Z", headers=headers).status_code
            == 401
        )


def test_without_a_configured_token_the_api_is_off(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with TestClient(make_app(web_settings(tmp_path, api_token=None), sessions)) as off:
        answer = off.post("/api/v1/import", headers=AUTH, json=week_document(PORTAL))
        assert answer.status_code == 503
        assert "DIGEST_API_TOKEN" in answer.json()["detail"]


@pytest.mark.parametrize("declared", [True, False])
def test_a_document_over_the_limit_is_a_413(
    client: TestClient, sessions: sessionmaker[Session], declared: bool
) -> None:
    body = b'{"version": 1, "schools": [' + b" " * MAX_IMPORT_BYTES + b"]}"
    if declared:
        answer = client.post("/api/v1/import", headers=AUTH, content=body)
    else:  # chunked: no Content-Length to refuse it by
        answer = client.post(
            "/api/v1/import",
            headers=AUTH,
            content=(body[i : i + MB] for i in range(0, len(body), MB)),
        )
    assert answer.status_code == 413


# --- preferences read-back --------------------------------------------------------------------


def test_the_portal_reads_back_the_choices_parents_made(
    client: TestClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    load(sessions, week_document(PORTAL))
    before = utcnow() - timedelta(seconds=1)
    links = Links(web_settings(tmp_path))
    form = client.get(links.preferences(["p2"])).text
    check = form.split('name="check" value="')[1].split('"')[0]
    saved = client.post(
        links.preferences(["p2"]), data={"delivery": "email", "locale": "en", "check": check}
    )
    assert saved.status_code == 200
    client.post(links.unsubscribe(["p3"]), data={"List-Unsubscribe": "One-Click"})

    answer = client.get("/api/v1/preferences", params={"since": before.isoformat()}, headers=AUTH)
    assert answer.status_code == 200
    found = {p["guardian_id"]: p for p in answer.json()["preferences"]}
    assert set(found) == {"p2", "p3"}
    assert found["p2"] | {"changed_at": None} == {
        "guardian_id": "p2",
        "school_id": "s1",
        "delivery": "email",
        "locale": "en",
        "opted_out": False,
        "changed_at": None,
    }
    assert found["p3"]["opted_out"] is True
    assert found["p3"]["delivery"] is None

    later = utcnow() + timedelta(seconds=1)
    empty = client.get("/api/v1/preferences", params={"since": later.isoformat()}, headers=AUTH)
    assert empty.json()["preferences"] == []


@pytest.mark.parametrize("since", ["yesterday", "2026-11-27T16:00", "2026-13-01T00:00Z", ""])
def test_a_bad_since_is_a_422_naming_it(client: TestClient, since: str) -> None:
    answer = client.get("/api/v1/preferences", params={"since": since}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("since: ")


def test_the_openapi_document_describes_the_api(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    imported = spec["paths"]["/api/v1/import"]["post"]
    assert set(imported["responses"]) >= {"200", "401", "413", "422", "503"}
    body = imported["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["version"]
    assert "guardians" in body["properties"]
    read = spec["paths"]["/api/v1/preferences"]["get"]
    assert read["parameters"][0]["name"] == "since"
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()


# --- fuzzing -----------------------------------------------------------------------------------


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    """The API on its own SQLite store, the school already there, loaded from its own document."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fuzz.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    load(sessions, week_document(PORTAL))
    app = make_app(web_settings(tmp_path), sessions)
    yield schemathesis.openapi.from_asgi("/api/openapi.json", app).include(path_regex="^/api/")
    engine.dispose()


def test_no_request_makes_the_api_fail(api_schema: Any) -> None:
    """Schemathesis's cases for every operation, with the token: never a 5xx."""
    # schemathesis.pytest's lazy fixture loader does not run under pytest 9: drive it directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/v1/import", "/api/v1/preferences"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        call()
