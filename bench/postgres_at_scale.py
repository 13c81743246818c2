"""Two PostgreSQL costs that grow with the store: a school's guardian query, and a purge's cascade.

    /work/.venv/bin/python bench/postgres_at_scale.py [--guardians 10000] [--weeks 52] [--quick]

A generated board (bench/generate.py) is imported into a fresh PostgreSQL database
(``digest_bench_<random>``, dropped after), every school's edition planned and the store
analyzed (as autovacuum keeps a running one); then:

1. **Planning's guardian query** (``digest.plan.gather``: guardians, their suppression and every
   group they belong to) for every school, with ``random_page_cost`` at PostgreSQL's default (4)
   and at compose.yaml's 1.1: milliseconds per school. With 4 the planner reads all of
   ``guardian_children`` for each school; with 1.1 it uses the index.
2. **A purge's cascade**: ``--weeks`` earlier editions are added with their ``recipients`` rows
   (as a year of planning leaves them; their mail rows already purged), then the week's mail rows
   are deleted, once as migration 0004 indexes ``recipients.delivery_id`` and once without that
   index (dropped in the same transaction; both deletes are rolled back).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from edition import PG_ADMIN, child_import, database  # noqa: E402
from generate import CUTOFF  # noqa: E402
from sqlalchemy import Connection, select, text  # noqa: E402

from digest.db import make_engine, session_factory  # noqa: E402
from digest.models import EditionPost, School  # noqa: E402
from digest.plan import gather, plan_edition  # noqa: E402

HISTORY = (
    """
INSERT INTO editions (school_id, cutoff, period_start, status, planned_at, kind)
  SELECT e.school_id, e.cutoff - make_interval(weeks => w),
         e.period_start - make_interval(weeks => w), e.status, e.planned_at, e.kind
  FROM editions e, generate_series(1, :weeks) w
""",
    """
INSERT INTO recipients (edition_id, guardian_id, delivery_id, reason, preference)
  SELECT older.id, r.guardian_id, NULL, r.reason, r.preference
  FROM recipients r
  JOIN editions planned ON planned.id = r.edition_id
  JOIN editions older ON older.school_id = planned.school_id AND older.cutoff < planned.cutoff
""",
)


def timed_delete(connection: Connection, *, indexed: bool) -> float:
    """Seconds to delete every mail row, in a transaction that is rolled back."""
    transaction = connection.begin()
    try:
        if not indexed:
            connection.execute(text("DROP INDEX ix_recipients_delivery_id"))
        started = time.perf_counter()
        connection.execute(text("DELETE FROM deliveries"))
        return time.perf_counter() - started
    finally:
        transaction.rollback()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--guardians", type=int, default=10000)
    parser.add_argument(
        "--weeks", type=int, default=52, help="earlier editions kept (0: no purge measured)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.guardians, args.weeks = 800, 4

    with (
        tempfile.TemporaryDirectory(prefix="digest-pg-") as tmp,
        database("postgresql", Path(tmp), args.pg_admin_url) as url,
    ):
        print(f"{args.guardians:,} guardians; load average {os.getloadavg()[0]:.2f}", flush=True)
        child_import(url, args.guardians, args.seed)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with sessions() as session:
            schools = list(session.scalars(select(School.id).order_by(School.id)))
        for school_id in schools:
            with sessions() as session, session.begin():
                plan_edition(session, school_id, CUTOFF)

        with engine.connect() as connection:  # as autovacuum keeps a running store
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        for cost in ("4", "1.1"):
            with sessions() as session:
                session.execute(text(f"SET random_page_cost = {cost}"))
                posts = select(EditionPost.post_id).where(EditionPost.edition_id == -1)
                started = time.perf_counter()
                for school_id in schools:
                    gather(session, session.get_one(School, school_id), post_query=posts)
                took = (time.perf_counter() - started) / len(schools)
            print(f"  plan.gather, random_page_cost {cost:>3}: {1000 * took:6.1f} ms per school")

        if not args.weeks:
            engine.dispose()
            return 0
        with engine.begin() as connection:
            for statement in HISTORY:
                connection.execute(text(statement), {"weeks": args.weeks})
            connection.execute(text("ANALYZE"))
        with engine.connect() as connection:
            recipients = connection.execute(text("SELECT count(*) FROM recipients")).scalar_one()
            mails = connection.execute(text("SELECT count(*) FROM deliveries")).scalar_one()
            connection.rollback()
            print(f"  delete the week's {mails:,} mail rows, {recipients:,} recipients rows kept:")
            for indexed in (True, False):
                seconds = timed_delete(connection, indexed=indexed)
                label = "with" if indexed else "without"
                print(f"    {label:>7} recipients.delivery_id's index: {1000 * seconds:9.1f} ms")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
