"""Scale-out: one and then two ``digest worker`` processes on one PostgreSQL outbox.

    /work/.venv/bin/python bench/scale_out.py [--guardians 12000] [--concurrency 2] [--quick]

A board (bench/generate.py) is imported into a fresh PostgreSQL database ``digest_bench_<random>``
(dropped after) and every school's edition planned. The sink (bench/sink.py, its own process)
answers each message 20 ms after its data (``--delay-ms``), as a distant relay would, and logs
address and Message-ID of each. Then, for 1 and for 2 workers: the outbox is put back to
``queued``, a fresh sink started, the workers started (``digest worker``, each with
``DIGEST_SEND_CONCURRENCY`` connections) and stopped with SIGTERM once no row is left to send.
Throughput is the sink's count over its first to last 250 (process start excluded); exactly-once
is checked from the sink's log: every queued address accepted once, none twice, none other.

With 20 ms per message a worker can have at most concurrency / 0.02 s in flight (400/s at 8
connections): the default ``--concurrency 2`` (100/s) keeps one worker bound by that latency
rather than by this 2-core machine's CPU, which two workers and the sink share.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path[:0] = [str(REPO), str(BENCH)]

from edition import PG_ADMIN, PYTHON, child_import, database, sink  # noqa: E402


def plan_all(url: str) -> set[str]:
    """Plan every school's edition; the queued addresses."""
    from generate import CUTOFF
    from sqlalchemy import select

    from digest.db import make_engine, session_factory
    from digest.models import Delivery, DeliveryStatus, School
    from digest.plan import plan_edition

    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as session:
        schools = list(session.scalars(select(School.id)))
    for school_id in schools:
        with sessions() as session, session.begin():
            plan_edition(session, school_id, CUTOFF)
    with sessions() as session:
        queued = set(
            session.scalars(
                select(Delivery.address).where(Delivery.status == DeliveryStatus.QUEUED)
            )
        )
    engine.dispose()
    return queued


def requeue(url: str) -> None:
    """Put the edition back as planned: every newsletter row queued, never attempted."""
    from sqlalchemy import update

    from digest.db import make_engine
    from digest.models import Delivery, DeliveryStatus, Edition, EditionStatus

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(Delivery.status != DeliveryStatus.SKIPPED)
            .values(
                status=DeliveryStatus.QUEUED,
                attempts=0,
                lease_until=None,
                first_attempt_at=None,
                next_attempt_at=None,
                sent_at=None,
                message_id=None,
                parts_sent=0,
            )
        )
        conn.execute(update(Edition).values(status=EditionStatus.PLANNED))
    engine.dispose()


def open_rows(url: str) -> int:
    from sqlalchemy import func, select

    from digest.db import make_engine
    from digest.models import Delivery, DeliveryStatus

    engine = make_engine(url)
    with engine.connect() as conn:
        left = conn.scalar(
            select(func.count()).where(
                Delivery.status.in_(
                    (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRY)
                )
            )
        )
    engine.dispose()
    return int(left or 0)


def run_workers(
    url: str, folder: Path, workers: int, concurrency: int, delay_ms: float, queued: set[str]
) -> dict[str, Any]:
    log = folder / f"accepted-{workers}.tsv"
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": url,
        "DIGEST_SEND_CONCURRENCY": str(concurrency),
        "DIGEST_MAIL_FROM": "nieuwsbrief@bench.example",
    }
    with sink(folder, "--log", str(log), "--delay-ms", str(delay_ms)) as (port, stats):
        env["DIGEST_MAIL_URL"] = f"smtp://127.0.0.1:{port}?tls=none"
        processes = [
            subprocess.Popen(
                [PYTHON, "-m", "digest", "worker", "--poll", "0.5"],
                cwd=folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"worker-{workers}-{n}.log").open("w"),
            )
            for n in range(workers)
        ]
        try:
            while open_rows(url):
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"a worker stopped early: see {folder}")
                time.sleep(0.5)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=120)
    accepted = Counter(line.split("\t")[0] for line in log.read_text().splitlines())
    rate = stats["count"] / max(stats["last"] - stats["first"], 1e-9)
    return {
        "workers": workers,
        "accepted": stats["count"],
        "rate": rate,
        "lost": len(queued - set(accepted)),
        "duplicated": sum(1 for count in accepted.values() if count > 1),
        "unexpected": len(set(accepted) - queued),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--guardians", type=int, default=12_000)
    parser.add_argument("--concurrency", type=int, default=2, help="connections per worker")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the sink's reply latency")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2,000)")
    args = parser.parse_args(argv)
    if args.quick:
        args.guardians = 2_000
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at start", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="digest-scale-") as tmp:
        folder = Path(tmp)
        with database("postgresql", folder, args.pg_admin_url) as url:
            child_import(url, args.guardians, args.seed)
            queued = plan_all(url)
            print(
                f"{len(queued):,} newsletters queued; the sink answers after {args.delay_ms:g} ms; "
                f"{args.concurrency} connection(s) per worker"
            )
            for workers in (1, 2):
                requeue(url)
                result = run_workers(url, folder, workers, args.concurrency, args.delay_ms, queued)
                results.append(result)
                print(
                    f"  {workers} worker(s): {result['accepted']:,} accepted, "
                    f"{result['rate']:.0f}/s; lost {result['lost']}, duplicated "
                    f"{result['duplicated']}, unexpected {result['unexpected']}",
                    flush=True,
                )
    one, two = results
    print(f"two workers / one: {two['rate'] / one['rate']:.2f}x (target >= 1.7)")
    exact = all(r["lost"] == r["duplicated"] == r["unexpected"] == 0 for r in results)
    print(f"exactly once: {'yes' if exact else 'NO'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
