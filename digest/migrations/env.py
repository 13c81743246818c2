"""Alembic environment: runs on the engine the service hands over (see ``digest.db.upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from digest.models import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    from digest.db import make_engine
    from digest.settings import load_settings

    engine = make_engine(load_settings().database_url)

# APScheduler's job store keeps its own table in the same database; it is not ours to migrate.
FOREIGN_TABLES = {"apscheduler_jobs"}


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()
