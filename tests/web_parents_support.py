"""What the parents' pages and the portal API tests share: a week with photos, the app, a server.

The week is the conftest's small school plus photos (served by the media stand-in on 127.0.0.1)
and an event, so the mail it makes carries every kind of link the parents' side answers.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from conftest import child, document, group, guardian, post, school
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest.compose import compose_delivery
from digest.ingest import import_document
from digest.links import Links
from digest.models import Delivery, Guardian, Recipient
from digest.render import Renderer
from digest.settings import Settings
from digest.web import create_app

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
WEEK_1 = datetime(2026, 11, 27, 17, 0, tzinfo=AMSTERDAM)  # an hour after the first cutoff
WEEK_2 = datetime(2026, 12, 4, 17, 0, tzinfo=AMSTERDAM)
API_TOKEN = "portal-test-token-0123456789"


def web_settings(tmp_path: Path, base_url: str = "http://testserver", **fields: Any) -> Settings:
    return Settings(
        base_url=base_url,
        secret_key="parents-pages-test-key",
        mail_from="nieuwsbrief@schakel.example",
        media_cache_dir=str(tmp_path / "media-cache"),
        api_token=fields.pop("api_token", API_TOKEN),
        **fields,
    )


def photo(media_id: str, portal: str, child_ids: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "id": media_id,
        "type": fields.pop("type", "image"),
        "url": fields.pop("url", f"{portal}/media/{media_id}.jpg"),
        "alt": fields.pop("alt", f"Foto {media_id}"),
        "child_ids": child_ids,
        **fields,
    }


def week_document(portal: str, *, c1_consent: str = "email") -> dict[str, Any]:
    """Two classes; m1 has eight photos (c1 in f1, c3 in f8 who allows no mail), m3 an event."""
    photos = [photo("f1", portal, ["c1"])]
    photos += [photo(f"f{n}", portal, []) for n in range(2, 8)]
    photos += [photo("f8", portal, ["c3"])]
    return document(
        schools=[school(portal_url="https://portal.example/schakel")],
        groups=[
            group("gs", kind="school", name="De Schakel"),
            group("g5", name="Groep 5"),
            group("g7", name="Groep 7"),
        ],
        children=[
            child("c1", ["g5"], consent=c1_consent),
            child("c2", ["g7"]),
            child("c3", ["g5"], consent="portal"),
        ],
        guardians=[
            guardian("p1", ["c1"], portal_account=False),
            guardian("p2", ["c2"]),
            guardian("p3", ["c3"], delivery="app"),
        ],
        posts=[
            post(
                "m1",
                "g5",
                "2026-11-24T10:15:00+01:00",
                kind="photos",
                title="Excursie naar het bos",
                url="https://portal.example/schakel/m1",
                media=photos,
            ),
            post("m2", "g7", "2026-11-25T09:00:00+01:00", title="Spreekbeurten"),
            post(
                "m3",
                "gs",
                "2026-11-26T12:00:00+01:00",
                kind="event",
                title="Sinterklaas op school",
                event={
                    "starts_at": "2026-12-05T09:00:00+01:00",
                    "ends_at": "2026-12-05T12:00:00+01:00",
                    "location": "Aula",
                },
            ),
        ],
    )


def next_week_posts() -> dict[str, Any]:
    return document(posts=[post("m9", "gs", "2026-12-01T09:00:00+01:00", title="Kerstmarkt")])


def load(sessions: sessionmaker[Session], doc: dict[str, Any]) -> None:
    with sessions() as session, session.begin():
        import_document(session, doc)


def guardian_row(sessions: sessionmaker[Session], guardian_id: str) -> Guardian:
    with sessions() as session:
        return session.get_one(Guardian, guardian_id)


def outcome(sessions: sessionmaker[Session], edition_id: int, guardian_id: str) -> Recipient:
    with sessions() as session:
        return session.get_one(Recipient, (edition_id, guardian_id))


def delivery_of(sessions: sessionmaker[Session], edition_id: int, guardian_id: str) -> Delivery:
    with sessions() as session:
        return session.scalars(
            select(Delivery)
            .join(Recipient, Recipient.delivery_id == Delivery.id)
            .where(Recipient.edition_id == edition_id, Recipient.guardian_id == guardian_id)
        ).one()


def rendered_mail(sessions: sessionmaker[Session], settings: Settings, delivery_id: int) -> Any:
    """The mail of an outbox row exactly as it is sent."""
    with sessions() as session:
        delivery = session.get_one(Delivery, delivery_id)
        content = compose_delivery(session, Links(settings), delivery)
    return Renderer(settings).render(content).message


def list_unsubscribe_url(message: Any) -> str:
    found = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    assert found, message["List-Unsubscribe"]
    return found.group(1)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port (its links then point there); yield its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="parents-pages", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the web server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app.state.settings = app.state.settings.model_copy(update={"base_url": url})
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def make_app(settings: Settings, sessions: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, sessions)
