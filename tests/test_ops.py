"""``/healthz`` and ``/metrics`` as an orchestrator and Prometheus see them, on both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conftest import document, guardian, on_event_loop
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from digest.db import make_engine, session_factory
from digest.heartbeat import beat, retire
from digest.ingest import import_document
from digest.models import Alert, AlertKind, utcnow
from digest.periods import parse_instant
from digest.settings import Settings, load_settings
from digest.web import create_app
from scheduler.jobs import plan_latest, send_due

AT = parse_instant("2026-11-27T17:00", "Europe/Amsterdam")


def client(sessions: sessionmaker[Session], settings: Settings | None = None) -> TestClient:
    return TestClient(create_app(settings or load_settings(mail_url="null://"), sessions))


def scrape(sessions: sessionmaker[Session]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client(sessions).get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_a_web_only_setup_is_healthy(sessions):
    response = client(sessions).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "scheduler": "absent",
        "workers": 0,
        "workers_state": "absent",
    }


def test_a_silent_worker_makes_it_unhealthy_until_another_beats(sessions):
    now = utcnow()
    beat(sessions, "worker", now=now - timedelta(minutes=10), process="worker:a:1")
    beat(sessions, "scheduler", now=now, process="scheduler:a:2")
    response = client(sessions).get("/healthz")
    assert response.status_code == 503
    assert response.json()["workers_state"] == "stale"
    assert response.json()["scheduler"] == "ok"

    beat(sessions, "worker", process="worker:b:3")
    response = client(sessions).get("/healthz")
    assert response.status_code == 200
    assert response.json()["workers"] == 1


def test_a_process_that_stopped_on_purpose_or_a_day_ago_does_not_count(sessions):
    beat(sessions, "scheduler", now=utcnow() - timedelta(days=2), process="scheduler:old:1")
    beat(sessions, "worker", now=utcnow() - timedelta(minutes=10), process="worker:a:1")
    retire(sessions, "worker:a:1")
    response = client(sessions).get("/healthz")
    assert response.status_code == 200
    assert response.json()["scheduler"] == "absent"


def test_an_unreachable_database_is_503(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'digest.db'}")
    response = client(session_factory(engine)).get("/healthz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_metrics_follow_the_outbox_from_planned_to_sent(sessions, small_school, tmp_path):
    with sessions() as session, session.begin():
        import_document(session, small_school)
        import_document(session, document(guardians=[guardian("p6", ["c2"])]))
    edition = plan_latest(sessions, "s1", AT).edition
    planned = scrape(sessions)
    queued = planned["digest_deliveries", (("status", "queued"),)]
    assert queued == 3  # p1 (no portal account), p2 and p6: newsletter readers with an address
    assert planned["digest_editions", (("status", "planned"),)] == 1
    assert planned["digest_queue_depth", ()] == queued
    assert planned["digest_oldest_queued_seconds", ()] > 0

    settings = load_settings(mail_url=f"maildir://{tmp_path / 'outbox'}")
    on_event_loop(send_due(sessions, settings, max(AT, edition.cutoff)))
    with sessions() as session, session.begin():
        session.add(Alert(kind=AlertKind.TRANSPORT_PAUSED, message="421 4.7.0 try later"))
    beat(sessions, "worker", process="worker:m:1")
    sent = scrape(sessions)
    assert sent["digest_deliveries", (("status", "sent"),)] == queued
    assert sent["digest_queue_depth", ()] == 0
    assert sent["digest_oldest_queued_seconds", ()] == 0
    assert sent["digest_alerts_open", (("kind", "transport_paused"),)] == 1
    assert sent["digest_processes_alive", (("role", "worker"),)] == 1
    assert sent["digest_heartbeat_age_seconds", (("role", "worker"),)] < 60
    assert ("digest_heartbeat_age_seconds", (("role", "scheduler"),)) not in sent
    # Sent on the real clock at the replayed cutoff: counted only when within the last day.
    latency = {k[1]: v for k, v in sent.items() if k[0] == "digest_send_latency_seconds_bucket"}
    assert latency[(("le", "+Inf"),)] == sent["digest_send_latency_seconds_gcount", ()]
    assert all(name.startswith("digest_") for name, _ in sent)
