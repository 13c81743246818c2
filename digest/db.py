"""Engines, sessions and migrations for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event, insert, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")

log = logging.getLogger(__name__)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``: psycopg 3 for PostgreSQL; foreign keys and WAL for SQLite."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        # Python's sqlite3 keeps 128 prepared statements a connection, and ours differ by the
        # length of their IN lists: the pool's connections then grew with the board (peak RSS
        # of bench/edition.py's process, 10,000 → 100,000 guardians: 131 → 157 MB, 1.20×; with
        # 16, 128 → 150–151 MB, 1.17–1.18×, for 0.05 % more instructions).
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("cached_statements", 16)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys, column names) in the session's transaction.

    On PostgreSQL by ``COPY``: one stream, where an insert is a statement per row for the
    server to parse and run (planning writes a row per guardian: writing a plan of 10,000 took
    1.3 s of a 2.1 s plan, 0.8 s of 1.5 s by COPY). The values go through each column type's
    bind processing, as an insert's would.
    Elsewhere (SQLite, in the process) an executemany insert.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    names = list(rows[0])
    processors = [table.c[name].type.bind_processor(dialect) for name in names]
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) FROM STDIN"
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [
                    row[name] if process is None else process(row[name])
                    for name, process in zip(names, processors, strict=True)
                ]
            )


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed at the end of the block, or rolled back on error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration that runs our packaged migrations on ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def pending_migrations(engine: Engine) -> str | None:
    """None when the database is at the newest schema, else a sentence saying what to do."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    found = f"schema {current}" if current else "no schema"
    return f"the database has {found}, this version needs {head}: run `digest db upgrade`"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the database to ``revision``."""
    command.upgrade(alembic_config(engine), revision)


# The tables an edition reads per school and per batch: a plan that guesses their sizes reads
# them whole, where one with statistics reads a school's or a batch's rows.
_PLANNED_TABLES = (
    "child_groups",
    "deliveries",
    "guardian_children",
    "guardians",
    "media",
    "media_children",
    "recipients",
)
_OFF = ("off", "false", "no", "0", "f", "n")


def statistics_warning(engine: Engine) -> str | None:
    """Why PostgreSQL would plan our queries without statistics, as a sentence; else None.

    Autovacuum analyzes a table once a tenth of it changed. Where it is off, the planner keeps
    guessing: it took half of ``recipients`` to match a batch of a hundred deliveries and
    joined every guardian to find them (``bench/edition.py``, 100,000 guardians: 25–50 ms a batch
    instead of 2, planning 11.6 s instead of 7.2, the edition a quarter slower). SQLite: None.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        server = str(connection.execute(text("SHOW autovacuum")).scalar()).lower()
        tables = sorted(
            connection.execute(
                text(
                    "SELECT c.relname FROM pg_class c, unnest(c.reloptions) AS o(setting) "
                    "WHERE c.relnamespace = current_schema()::regnamespace "
                    "AND c.relname = ANY(:tables) "
                    "AND split_part(o.setting, '=', 1) = 'autovacuum_enabled' "
                    "AND lower(split_part(o.setting, '=', 2)) = ANY(:off)"
                ),
                {"tables": list(_PLANNED_TABLES), "off": list(_OFF)},
            ).scalars()
        )
    off = []
    if server in _OFF:
        off.append("on the server (autovacuum = off)")
    if tables:
        off.append(f"for table(s) {', '.join(tables)} (autovacuum_enabled = off)")
    if not off:
        return None
    return (
        f"PostgreSQL's autovacuum is off {' and '.join(off)}: the planner lacks statistics and "
        "editions go out slower; turn it on, or run ANALYZE after each import and each planning"
    )


def warn_without_statistics(engine: Engine) -> None:
    """Log ``statistics_warning`` once, at a sending process's start."""
    problem = statistics_warning(engine)
    if problem:
        log.warning(problem)
