"""The store: migrations build exactly the models' schema, and times keep their instant."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import cli_environment
from sqlalchemy import inspect, text

from digest.db import pending_migrations
from digest.models import Base, School, Suppression


def test_migrations_build_the_schema_the_models_describe(engine):
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert pending_migrations(engine) is None


def test_every_foreign_key_column_leads_an_index(engine):
    """A delete that cascades (a purged mail row, a guardian the portal deleted) finds the rows
    that refer to it by an index; without one it reads the whole referring table per row."""
    inspector = inspect(engine)
    unindexed = []
    for table in inspector.get_table_names():
        led = {tuple(inspector.get_pk_constraint(table)["constrained_columns"][:1])}
        led |= {tuple(index["column_names"][:1]) for index in inspector.get_indexes(table)}
        led |= {tuple(u["column_names"][:1]) for u in inspector.get_unique_constraints(table)}
        for key in inspector.get_foreign_keys(table):
            if tuple(key["constrained_columns"][:1]) not in led:
                unindexed.append(f"{table}.{key['constrained_columns'][0]}")
    assert unindexed == []


def test_times_come_back_as_the_same_instant_in_utc(sessions):
    amsterdam = timezone(timedelta(hours=1))
    stored = datetime(2026, 11, 27, 16, 0, tzinfo=amsterdam)
    with sessions() as session, session.begin():
        session.add(Suppression(address="a@b.example", reason="550", created_at=stored))
    with sessions() as session:
        back = session.get_one(Suppression, "a@b.example").created_at
    assert back == stored and back.tzinfo == UTC


def test_school_defaults_are_friday_1600_amsterdam(sessions):
    with sessions() as session, session.begin():
        session.add(School(id="s1", name="De Schakel"))
    with sessions() as session:
        school = session.get_one(School, "s1")
    assert (school.digest_weekday, school.digest_time, school.timezone) == (
        4,
        "16:00",
        "Europe/Amsterdam",
    )


def test_a_worker_says_at_start_when_postgresql_would_plan_without_statistics(engine, tmp_path):
    """Autovacuum off for the outbox: PostgreSQL guesses its size and reads it whole per batch."""
    url = engine.url.render_as_string(hide_password=False)
    environment = cli_environment(
        DIGEST_DATABASE_URL=url, DIGEST_MAIL_URL=f"maildir://{tmp_path / 'outbox'}"
    )

    def worker_says() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "digest", "worker", "--once"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    if engine.dialect.name == "sqlite":
        assert "autovacuum" not in worker_says()  # SQLite has no autovacuum to warn about
        return
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE recipients SET (autovacuum_enabled = off)"))
    try:
        said = worker_says()
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE recipients RESET (autovacuum_enabled)"))
    warning = [line for line in said.splitlines() if "autovacuum" in line]
    assert len(warning) == 1, said
    assert "for table(s) recipients (autovacuum_enabled = off)" in warning[0]
    assert " WARNING digest.db " in warning[0]
    # Once it is back on, the table is no longer named (the server's own setting may still be).
    assert "recipients" not in worker_says()
