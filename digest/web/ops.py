"""Operations: ``/healthz`` for load balancers and orchestrators, ``/metrics`` for Prometheus.

Health: 200 when the database answers and no role that ran in the last day has gone silent;
503 otherwise. A role never seen (a web-only development setup) does not count against it.
Metrics are read from the database at scrape time, so every web instance shows the same figures
and nothing is lost when a process restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, and_, case, extract, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest.deliver import _due
from digest.heartbeat import REMEMBER, ROLES, fresh, role_state
from digest.models import (
    Alert,
    AlertKind,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Heartbeat,
    utcnow,
)
from digest.settings import Settings

router = APIRouter(tags=["operations"])

# Send latency buckets, in seconds: a per-post mail takes seconds, a large board's weekly burst
# minutes; beyond an hour something is wrong.
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0)
# The latency histogram covers the mails sent in this window before the scrape.
LATENCY_WINDOW = timedelta(days=1)


def health(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> dict[str, Any]:
    """The health report: database, scheduler and worker heartbeats, and the verdict."""
    report: dict[str, Any] = {"status": "unhealthy", "database": "unreachable"}
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
            report["database"] = "ok"
            stale = settings.heartbeat_stale_seconds
            report["scheduler"] = role_state(session, "scheduler", stale, now)
            report["workers"] = fresh(session, "worker", stale, now)
            report["workers_state"] = role_state(session, "worker", stale, now)
    except SQLAlchemyError:
        return report
    if "stale" not in (report["scheduler"], report["workers_state"]):
        report["status"] = "ok"
    return report


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """200 and ``"status": "ok"`` when healthy, else 503 with what is wrong."""
    report = health(request.app.state.sessions, request.app.state.settings, utcnow())
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The Prometheus text format, every figure read from the database now."""
    state = request.app.state
    registry = getattr(state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(state.sessions, state.settings))
        state.metrics_registry = registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class StoreCollector(Collector):
    """Editions, deliveries, the queue, alerts and heartbeats, queried at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("digest_database_up", "1 when the database answered this scrape")
        try:
            with self.sessions() as session:
                families = list(self._families(session, utcnow()))
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, session: Session, now: datetime) -> Iterator[Any]:
        yield _by_status(
            session,
            "digest_editions",
            "Editions by status",
            Edition.status,
            [s.value for s in EditionStatus],
        )
        yield _by_status(
            session,
            "digest_deliveries",
            "Outbox rows (one mail to one address) by status",
            Delivery.status,
            [s.value for s in DeliveryStatus],
        )
        due = _due(now, None)
        depth = GaugeMetricFamily(
            "digest_queue_depth", "Outbox rows due now and not yet sent (what workers still owe)"
        )
        depth.add_metric([], session.scalar(select(func.count()).where(due)) or 0)
        yield depth
        oldest_due = session.scalar(
            select(func.min(func.coalesce(Delivery.next_attempt_at, Delivery.created_at))).where(
                due
            )
        )
        oldest = GaugeMetricFamily(
            "digest_oldest_queued_seconds",
            "How long the oldest row due now has waited since it became due (0: none waits)",
        )
        oldest.add_metric([], max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0)
        yield oldest
        yield _latency(session, now)
        yield _by_status(
            session,
            "digest_alerts_open",
            "Open alerts by kind (a paused transport, a missed or failed run)",
            Alert.kind,
            [k.value for k in AlertKind],
            label="kind",
            where=Alert.resolved_at.is_(None),
        )
        yield from self._heartbeats(session, now)

    def _heartbeats(self, session: Session, now: datetime) -> Iterator[Any]:
        age = GaugeMetricFamily(
            "digest_heartbeat_age_seconds",
            "Seconds since the freshest heartbeat of each role seen in the last day",
            labels=["role"],
        )
        alive = GaugeMetricFamily(
            "digest_processes_alive",
            "Processes of each role whose heartbeat is fresh (DIGEST_HEARTBEAT_STALE_SECONDS)",
            labels=["role"],
        )
        latest = dict(
            session.execute(
                select(Heartbeat.role, func.max(Heartbeat.beat_at))
                .where(Heartbeat.beat_at >= now - REMEMBER)
                .group_by(Heartbeat.role)
            ).all()
        )
        for role in ROLES:
            if role in latest:
                age.add_metric([role], max(0.0, (now - latest[role]).total_seconds()))
            alive.add_metric(
                [role], fresh(session, role, self.settings.heartbeat_stale_seconds, now)
            )
        yield age
        yield alive


def _by_status(
    session: Session,
    name: str,
    documentation: str,
    column: Any,
    values: list[str],
    *,
    label: str = "status",
    where: ColumnElement[bool] | None = None,
) -> GaugeMetricFamily:
    """A gauge per value of ``column`` (every known value shown, zero included)."""
    query = select(column, func.count()).group_by(column)
    if where is not None:
        query = query.where(where)
    counts = {str(getattr(key, "value", key)): count for key, count in session.execute(query)}
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value in values:
        family.add_metric([value], counts.get(value, 0))
    return family


def _latency(session: Session, now: datetime) -> GaugeHistogramMetricFamily:
    """Seconds from due to sent, for the mails sent in the last day.

    Due is the edition's cutoff for a newsletter (or its planning, if that came later: an extra
    edition, a run after a restart) and the row's creation for a per-post mail: what a parent
    waits for, whatever retries happened in between.
    """
    due_at = case(
        (Delivery.kind == DeliveryKind.POST, Delivery.created_at),
        (Edition.planned_at > Edition.cutoff, Edition.planned_at),
        else_=Edition.cutoff,
    )
    seconds = _seconds_between(session, Delivery.sent_at, due_at)
    seconds = case((seconds < 0, 0.0), else_=seconds)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS]
    query = (
        select(func.count(), func.sum(seconds), *columns)
        .select_from(Delivery)
        .outerjoin(Edition, Edition.id == Delivery.edition_id)
        .where(
            and_(
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at >= now - LATENCY_WINDOW,
                Delivery.sent_at <= now,
            )
        )
    )
    total, total_seconds, *within = session.execute(query).one()
    buckets = [(str(bound), int(n or 0)) for bound, n in zip(LATENCY_BUCKETS, within, strict=True)]
    buckets.append(("+Inf", int(total or 0)))
    return GaugeHistogramMetricFamily(
        "digest_send_latency_seconds",
        "Seconds from due (cutoff, or queueing) to accepted by the mail server, last day's mails",
        buckets=buckets,
        gsum_value=float(total_seconds or 0.0),
    )


def _seconds_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds, in SQL (SQLite keeps times as text, PostgreSQL not)."""
    if session.get_bind().dialect.name == "postgresql":
        return extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0
