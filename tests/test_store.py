"""The store: migrations build exactly the models' schema, and times keep their instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

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
