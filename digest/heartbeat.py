"""Heartbeats: each long-running process (scheduler, worker) says it is alive in the database.

One row per process, ``role:host:pid``, upserted at most every ``BEAT_EVERY`` seconds. A process
that stops on purpose removes its row, so a stale row means one that died without saying so.
``/healthz``, ``/metrics`` and ``digest healthcheck`` read them; rows of processes not seen for a
day are forgotten (``forget_dead``, called by the retention purge).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest.models import Heartbeat, utcnow

log = logging.getLogger(__name__)

ROLES = ("scheduler", "worker")
# Often enough for a stale limit of a minute or two, rare enough to cost nothing.
BEAT_EVERY = 15.0
# A role seen within this window is expected to be running: its silence is a failure.
REMEMBER = timedelta(days=1)


def process_id(role: str, host: str | None = None, pid: int | None = None) -> str:
    """This process's heartbeat id: ``role:host:pid``."""
    return f"{role}:{host or socket.gethostname()}:{pid or os.getpid()}"


def beat(
    sessions: sessionmaker[Session],
    role: str,
    *,
    now: datetime | None = None,
    process: str | None = None,
    starting: bool = False,
) -> None:
    """Record that this process (``role``) is alive now: one UPSERT, SQLite or PostgreSQL.

    ``starting`` also resets ``started_at`` (a restarted container reuses host and pid 1).
    """
    now = now or utcnow()
    values: dict[str, Any] = {
        "id": process or process_id(role),
        "role": role,
        "started_at": now,
        "beat_at": now,
    }
    with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(Heartbeat).values(**values)
        changed = {"beat_at": statement.excluded.beat_at}
        if starting:
            changed["started_at"] = statement.excluded.started_at
        session.execute(
            statement.on_conflict_do_update(index_elements=[Heartbeat.id], set_=changed)
        )


def retire(sessions: sessionmaker[Session], process: str) -> None:
    """Remove a process's heartbeat when it stops on purpose (it is not dead, it is gone)."""
    with sessions() as session, session.begin():
        session.execute(delete(Heartbeat).where(Heartbeat.id == process))


def fresh(session: Session, role: str, stale_seconds: float, now: datetime) -> int:
    """How many processes of ``role`` beat within the last ``stale_seconds``."""
    since = now - timedelta(seconds=stale_seconds)
    query = select(func.count()).where(Heartbeat.role == role, Heartbeat.beat_at >= since)
    return int(session.scalar(query) or 0)


def last_beat(session: Session, role: str, *, host: str | None = None) -> datetime | None:
    """The latest heartbeat of ``role`` (on ``host`` only, when given), or None."""
    query = select(func.max(Heartbeat.beat_at)).where(Heartbeat.role == role)
    if host is not None:
        query = query.where(Heartbeat.id.startswith(f"{role}:{host}:", autoescape=True))
    return session.scalar(query)


def role_state(session: Session, role: str, stale_seconds: float, now: datetime) -> str:
    """``ok`` (a fresh heartbeat), ``stale`` (seen in the last day, silent now) or ``absent``."""
    latest = last_beat(session, role)
    if latest is None or latest < now - REMEMBER:
        return "absent"
    return "ok" if latest >= now - timedelta(seconds=stale_seconds) else "stale"


def forget_dead(session: Session, now: datetime, older_than: timedelta = REMEMBER) -> int:
    """Delete the rows of processes silent for ``older_than``; returns how many."""
    result = session.execute(delete(Heartbeat).where(Heartbeat.beat_at < now - older_than))
    return int(getattr(result, "rowcount", 0) or 0)


class Pulse:
    """One process's heartbeat: ``beat`` writes at most every ``every`` seconds, ``stop`` retires.

    A failed write (the database away for a moment) is logged, never raised: the process's own
    work reports database trouble, and the heartbeat going stale says the rest.
    """

    def __init__(
        self, sessions: sessionmaker[Session], role: str, *, every: float = BEAT_EVERY
    ) -> None:
        self.sessions = sessions
        self.role = role
        self.process = process_id(role)
        self.every = every
        self._last: float | None = None

    def beat(self, *, force: bool = False) -> bool:
        """Write the heartbeat if it is due (or ``force``); True when written."""
        clock = time.monotonic()
        if not force and self._last is not None and clock - self._last < self.every:
            return False
        try:
            beat(self.sessions, self.role, process=self.process, starting=self._last is None)
        except SQLAlchemyError as exc:
            log.warning("heartbeat of %s not written: %s", self.process, type(exc).__name__)
            return False
        self._last = clock
        return True

    def stop(self) -> None:
        """Remove this process's row (a clean exit is not a death)."""
        try:
            retire(self.sessions, self.process)
        except SQLAlchemyError as exc:
            log.warning("heartbeat of %s not removed: %s", self.process, type(exc).__name__)
