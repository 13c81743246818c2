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

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
