"""An edition end to end: plan + render + build + deliver a board's week to an SMTP sink.

    /work/.venv/bin/python bench/edition.py [--sizes 10000 100000] [--backend both]
        [--workers 1 2] [--planning first|scheduler] [--quick]

For each backend (a PostgreSQL database ``digest_bench_<random>`` created on
``--pg-admin-url`` with compose.yaml's ``random_page_cost = 1.1`` and dropped after, or a SQLite
file) and each board size (guardians in all, ~400 per school, bench/generate.py's mix: 15 % want
the newsletter):

1. a child process imports the board (not measured);
2. ``bench/sink.py --count-only`` in its own process counts what it accepts (first and last 250);
3. a fresh child process plans every school's edition and delivers it (``digest.worker``'s
   deliverer: 8 SMTP connections) to the sink: planning first, or with ``--planning scheduler``
   as ``digest scheduler`` with its embedded worker does (``child_edition``). The clock starts
   when planning starts, after the process, its imports and its renderer are up. It reports its
   peak RSS (``ru_maxrss``) and the database round trips of planning (a SQLAlchemy
   ``before_cursor_execute`` count, of the planning statements only);
4. the same number of pre-built messages (the same board's newsletters, those of its first 25
   schools, rendered beforehand) sent by the standard library's smtplib over 8 connections
   (threads) to a fresh sink: the raw throughput the edition is compared with. The sink's work
   grows with a message's lines, so the table shows the KB and lines a mail of both. Raw is
   measured just before the edition and just after it, and the edition is compared with their
   mean: this machine's speed drifts by a fifth over minutes.

Over the edition the child also reads the whole machine's busy CPU (Linux's ``/proc/stat``: every
process, the sink's, the helpers' and PostgreSQL's included) and PostgreSQL's backends' own: per
mail, and the rate the machine's cores would cap that at (cores ÷ CPU per mail, as a ratio to
raw). An edition below 0.6 with a cap above it waits, rather than runs out of CPU.

On PostgreSQL the bench's database gets statistics as a deployment's does: where the server runs
without autovacuum (this machine's), a thread applies autovacuum's rule for ANALYZE to it every
second (``Autoanalyze``).

Newsletters/s are the sink's count over (its last 250 − the start). The targets: edition ≥ 0.6 of
raw; peak RSS ≤ 300 MB and at 100,000 guardians ≤ 1.2× that at 10,000; ≤ 20 round trips per
1,000 recipients planned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path[:0] = [str(REPO), str(BENCH)]
PYTHON = sys.executable
PER_SCHOOL = 400
RAW_SCHOOLS = 25  # whose newsletters raw smtplib sends (child_raw)
PG_ADMIN = os.environ.get("DIGEST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- the children ------------------------------------------------------------------------------


def child_import(url: str, guardians: int, seed: int) -> None:
    """Migrate and import the board (one school per document, as a portal would send them)."""
    from generate import CUTOFF, board

    from digest.db import make_engine, session_factory, upgrade
    from digest.ingest import import_document

    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    document = board(max(1, guardians // PER_SCHOOL), guardians, seed=seed)
    for school in document["schools"]:
        with sessions() as session, session.begin():
            import_document(session, schools_part(document, [school]), now=CUTOFF)
    engine.dispose()


def schools_part(document: dict[str, Any], schools: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of a generated board that holds ``schools`` (ids are prefixed by the school's)."""
    prefixes = tuple(school["id"] for school in schools)
    part: dict[str, Any] = {"version": 1, "schools": schools}
    for key in ("groups", "children", "guardians", "posts"):
        part[key] = [item for item in document[key] if item["id"].startswith(prefixes)]
    return part


def bench_settings(url: str, port: int) -> Any:
    """The settings of every delivering process: 8 connections to the sink."""
    from digest.settings import load_settings

    return load_settings(
        database_url=url,
        mail_url=f"smtp://127.0.0.1:{port}?tls=none",
        mail_from="nieuwsbrief@bench.example",
        send_concurrency=8,
    )


def start_helpers(url: str, port: int, at: datetime, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes on the same outbox, idle until rows are due.

    They are the deployment's other workers (compose.yaml runs the scheduler and workers): they
    send what the planning process has committed while it plans the next schools. Each runs
    ``digest worker``'s loop (``run_worker``) at the bench's instant, which the command line
    only allows with ``--once``.
    """
    command = [PYTHON, __file__, "_helper", url, str(port), at.isoformat()]
    return [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL) for _ in range(count)]


def child_helper(url: str, port: int, at: datetime) -> None:
    from digest.db import make_engine, session_factory
    from digest.worker import run_loop, run_worker

    settings = bench_settings(url, port)
    engine = make_engine(url)
    run_loop(run_worker(session_factory(engine), settings, at=at, poll=0.2), settings)  # to SIGTERM
    engine.dispose()


def wait_for_heartbeats(sessions: Any, helpers: list[subprocess.Popen[bytes]]) -> None:
    """Process start is not the edition's: the clock starts once every helper has beaten."""
    from sqlalchemy import func, select

    from digest.models import Heartbeat

    deadline = time.monotonic() + 120
    while True:
        with sessions() as session:
            beaten = session.scalar(
                select(func.count()).select_from(Heartbeat).where(Heartbeat.role == "worker")
            )
        if beaten >= len(helpers):
            return
        if time.monotonic() > deadline or any(h.poll() is not None for h in helpers):
            raise RuntimeError("a helper worker did not start")
        time.sleep(0.2)


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine has spent not idle since boot (Linux's /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy.
    ticks = [int(value) for value in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def processes_cpu_seconds(name: str) -> float | None:
    """CPU seconds (user + system) of the running processes called ``name``, e.g. PostgreSQL's."""
    total, seen = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        if text[text.index("(") + 1 : text.rindex(")")] != name:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        seen = True
    return total if seen else None


def spent(start: float | None, end: float | None) -> float | None:
    """``end - start``, or None when either reading was not to be had."""
    return None if start is None or end is None else end - start


def per_mail(total: float | None, mails: int, scale: float = 1.0) -> float | None:
    """``total`` per mail (times ``scale``), None stays None."""
    return None if total is None else scale * total / max(mails, 1)


def statuses(sessions: Any) -> dict[str, int]:
    """The outbox's rows by status."""
    from sqlalchemy import func, select

    from digest.models import Delivery

    with sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status.value: number for status, number in rows}


def open_rows(sessions: Any) -> int:
    """Rows still queued or being sent. A row put back for a retry waits minutes: not what the
    edition waits for."""
    from digest.models import DeliveryStatus

    counts = statuses(sessions)
    return sum(counts.get(s.value, 0) for s in (DeliveryStatus.QUEUED, DeliveryStatus.SENDING))


def child_edition(url: str, port: int, workers: int, planning: str) -> dict[str, Any]:
    """Plan every school's edition, deliver it to the sink; the figures as a dict.

    ``planning`` ``first``: this process plans every school, one after the other, and then
    delivers. ``scheduler``: it works as ``digest scheduler`` with its embedded worker on a
    Friday, when every school's weekly job is due at once: each job plans its school in the
    scheduler's planning threads (``scheduler.service.PLANNERS`` of them, as
    ``weekly_edition`` does), and, its plan committed, kicks the worker's ``deliver`` job, the
    scheduler's own ``deliver_due``, which runs in the loop and goes round again while plans
    arrive. Either way ``workers`` − 1 ``digest worker`` processes deliver beside it from the
    first commit.
    """
    from generate import CUTOFF
    from sqlalchemy import event, select

    from digest.db import make_engine, session_factory
    from digest.models import School
    from digest.plan import plan_edition
    from digest.worker import open_deliverer, run_loop
    from scheduler import service

    settings = bench_settings(url, port)
    engine = make_engine(url)
    sessions = session_factory(engine)
    at = CUTOFF + timedelta(minutes=5)
    helpers = start_helpers(url, port, at, workers - 1)
    deliverer = open_deliverer(sessions, settings)  # compiles the templates: process start-up
    with sessions() as session:
        schools = list(session.scalars(select(School.id).order_by(School.id)))
    wait_for_heartbeats(sessions, helpers)
    round_trips = 0
    in_plan = threading.local()  # planning's statements are counted, not delivery's

    def count(*_args: Any) -> None:
        nonlocal round_trips
        if getattr(in_plan, "on", False):
            round_trips += 1

    planned_at = 0.0

    def plan_one(school_id: str) -> int:
        nonlocal planned_at
        in_plan.on = True
        try:
            with sessions() as session, session.begin():
                result = plan_edition(session, school_id, CUTOFF)
        finally:
            in_plan.on = False
        planned_at = time.time()
        return sum(result.counts.values())

    async def plan_then_deliver() -> int:
        planned = sum(plan_one(school_id) for school_id in schools)
        await deliverer.run(at)
        return planned

    async def as_the_scheduler() -> int:
        loop = asyncio.get_running_loop()
        passes: list[asyncio.Future[None]] = []

        def kick() -> None:  # what ``Runtime.kick`` has APScheduler do: run the deliver job
            passes.append(asyncio.ensure_future(service.deliver_due()))

        def job(school_id: str) -> int:
            planned = plan_one(school_id)
            loop.call_soon_threadsafe(kick)
            return planned

        with ThreadPoolExecutor(service.PLANNERS) as planners:  # as ``Runtime.planners``
            planned = await asyncio.gather(
                *(loop.run_in_executor(planners, job, s) for s in schools)
            )
        while passes:  # the passes the last plans kicked, until one finds nothing to send
            await passes.pop(0)
        return sum(planned)

    async def edition() -> int:
        try:
            return await (as_the_scheduler() if planning == "scheduler" else plan_then_deliver())
        finally:
            await deliverer.transport.close()

    # The deliver job's state: the bench's clock stands still at its instant, and kicks go
    # straight to the job (no APScheduler here to route them).
    service.install(
        service.Runtime(sessions, settings, None, deliverer, clock=lambda: at)  # type: ignore[arg-type]
    )
    started = time.time()
    cpu_started = time.process_time()
    machine_started = machine_busy_seconds()
    database_started = processes_cpu_seconds("postgres") if url.startswith("postgres") else None
    event.listen(engine, "before_cursor_execute", count)
    planned = run_loop(edition(), settings)  # on the event loop `digest worker` runs
    event.remove(engine, "before_cursor_execute", count)
    service.install(None)
    plan_seconds = planned_at - started  # until the last school's plan was committed
    while open_rows(sessions):  # what the helpers still have in flight
        time.sleep(0.05)
    deliver_seconds = time.time() - started - plan_seconds
    cpu_seconds = time.process_time() - cpu_started
    machine_ended = machine_busy_seconds()
    database_ended = processes_cpu_seconds("postgres") if database_started is not None else None
    counts = statuses(sessions)
    for helper in helpers:
        helper.send_signal(signal.SIGTERM)
    for helper in helpers:
        helper.wait(timeout=120)
    engine.dispose()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "started": started,
        "plan_seconds": plan_seconds,
        "deliver_seconds": deliver_seconds,
        "schools": len(schools),
        "planned": planned,
        "round_trips": round_trips,
        "counts": counts,  # every row's status at the end, whichever process sent it
        "rss_mb": own,
        "cpu_seconds": cpu_seconds,  # this process's, from the start; helpers not counted
        # Every core's busy time over the same span (all processes: sink, helpers, database),
        # and PostgreSQL's backends' (those alive at the end: a backend's CPU goes with it).
        "machine_cpu_seconds": spent(machine_started, machine_ended),
        "database_cpu_seconds": spent(database_started, database_ended),
        # The helpers' largest (the kernel keeps the peak of the waited-for children).
        "helper_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if helpers
        else 0.0,
    }


def board_newsletters(guardians: int, seed: int) -> list[bytes]:
    """The newsletters of the board's first ``RAW_SCHOOLS`` schools, as the deliverer sends them."""
    from generate import CUTOFF, board, mail_contents

    from digest.render import Renderer
    from digest.settings import Settings

    settings = Settings(mail_from="nieuwsbrief@bench.example")
    renderer = Renderer(settings)
    document = board(max(1, guardians // PER_SCHOOL), guardians, seed=seed)
    part = schools_part(document, document["schools"][:RAW_SCHOOLS])
    return [renderer.render(content, now=CUTOFF).data for content in mail_contents(part, settings)]


def child_raw(port: int, count: int, seed: int, connections: int, guardians: int) -> dict[str, Any]:
    """Send ``count`` pre-built newsletters of the edition's board over ``connections``.

    The sink's work grows with a message's lines, so raw sends the edition's own newsletters:
    those of the board's first ``RAW_SCHOOLS`` schools (all of a 10,000-guardian board; a tenth
    of a 100,000 one, whose schools are drawn alike), in order, round again if ``count`` is more.
    """
    built = board_newsletters(guardians, seed)
    queue = [(f"raw{n:06d}@ouders.example", built[n % len(built)]) for n in range(count)]
    queue.reverse()  # popped from the end: sent in the board's order
    lock = threading.Lock()

    def sender() -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as smtp:
            while True:
                with lock:
                    if not queue:
                        return
                    address, data = queue.pop()
                smtp.sendmail("bounce@bench.example", [address], data)

    started = time.time()
    threads = [threading.Thread(target=sender) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"started": started, "sent": count, "average_bytes": sum(map(len, built)) / len(built)}


# --- the parent --------------------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, folder: Path, admin_url: str) -> Iterator[str]:
    """A fresh store's URL: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    from sqlalchemy import text

    from digest.db import make_engine

    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"digest_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # As compose.yaml runs PostgreSQL: index probes priced for a disk that is local.
        conn.execute(text(f'ALTER DATABASE "{name}" SET random_page_cost = 1.1'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    analyzer = Autoanalyze(url)
    try:
        analyzer.start()
        yield url
    finally:
        analyzer.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Autoanalyze(threading.Thread):
    """Autovacuum's ANALYZE, applied by the bench where the server runs without autovacuum.

    A deployment's PostgreSQL (compose.yaml keeps the defaults) analyzes a table once more than
    50 rows + 10 % of it changed since its last analysis. This machine's server runs with
    ``autovacuum = off``: a fresh store would keep no statistics at all, and the planner then
    guesses that half of ``recipients`` matches a batch's hundred ids (a hash join over every
    guardian, 25–50 ms a batch at 100,000 guardians, against 2 ms with statistics). This thread
    applies autovacuum's rule to the bench's database every second rather than every minute: a
    store in use has its statistics, from its imports and earlier weeks, before a Friday. It
    does nothing where the server's own autovacuum is on.
    """

    def __init__(self, url: str, nap: float = 1.0) -> None:
        super().__init__(name="autoanalyze", daemon=True)
        self.url = url
        self.nap = nap
        self.analyzed = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        from sqlalchemy import text

        from digest.db import make_engine

        engine = make_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if conn.execute(text("SHOW autovacuum")).scalar() == "on":
                    return
                while not self._stopping.wait(self.nap):
                    for (table,) in conn.execute(text(_DUE_FOR_ANALYZE)):
                        conn.execute(text(f'ANALYZE "{table}"'))
                        self.analyzed += 1
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)
        if self.analyzed:
            print(f"(the server's autovacuum is off: the bench analyzed {self.analyzed} tables)")


# Autovacuum's rule for ANALYZE (its thresholds as the server has them): the tables due.
_DUE_FOR_ANALYZE = """
    SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float
        + current_setting('autovacuum_analyze_scale_factor')::float * greatest(c.reltuples, 0)
"""


@contextlib.contextmanager
def sink(folder: Path, *extra: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """bench/sink.py in its own process: (port, stats filled in when it stops)."""
    port_file = folder / f"sink-{uuid.uuid4().hex[:6]}.port"
    process = subprocess.Popen(
        [PYTHON, str(BENCH / "sink.py"), "--port-file", str(port_file), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stats: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the sink did not start")
            time.sleep(0.05)
        yield int(port_file.read_text()), stats
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=60)
        for line in out.splitlines():
            if line.startswith("stats "):
                stats.update(json.loads(line[6:]))


def run_child(*args: str) -> dict[str, Any]:
    """Run this file as a child with ``args``; its last stdout line is its JSON result."""
    done = subprocess.run(
        [PYTHON, __file__, *args], check=True, capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def raw_throughput(folder: Path, count: int, seed: int, guardians: int) -> dict[str, Any]:
    """smtplib's rate over 8 connections to a fresh sink, the sink's CPU and bytes per message."""
    with sink(folder, "--count-only") as (port, stats):
        raw = run_child("_raw", str(port), str(count), str(seed), "8", str(guardians))
    return {
        "rate": stats["count"] / max(stats["last"] - raw["started"], 1e-9),
        "sink_cpu_ms": per_mail(stats.get("cpu", 0.0), stats["count"], 1000),
        "kb": per_mail(stats.get("bytes", 0), stats["count"], 1 / 1000),
        "lines": per_mail(stats.get("lines", 0), stats["count"]),
    }


def one_run(
    backend: str, guardians: int, seed: int, admin_url: str, workers: int, planning: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="digest-edition-") as tmp:
        folder = Path(tmp)
        with database(backend, folder, admin_url) as url:
            started = time.perf_counter()
            run_child("_import", url, str(guardians), str(seed))
            imported = time.perf_counter() - started
            # Raw just before and just after the edition: this machine's speed drifts by a
            # fifth over minutes, so the edition is compared with the mean of the two.
            before = raw_throughput(folder, max(1_000, guardians // 6), seed, guardians)
            with sink(folder, "--count-only") as (port, stats):
                edition = run_child("_edition", url, str(port), str(workers), planning)
            after = raw_throughput(folder, stats["count"], seed, guardians)
    rate = stats["count"] / max(stats["last"] - edition["started"], 1e-9)
    raw_rate = (before["rate"] + after["rate"]) / 2
    machine = edition["machine_cpu_seconds"]
    bound = (os.cpu_count() or 1) * stats["count"] / machine if machine else None
    per_thousand = 1000 * edition["round_trips"] / max(edition["planned"], 1)
    return {
        "backend": backend,
        "guardians": guardians,
        "workers": workers,
        "import_s": imported,
        "schools": edition["schools"],
        "planned": edition["planned"],
        "sent": stats["count"],
        "counts": edition["counts"],
        "plan_s": edition["plan_seconds"],
        "deliver_s": edition["deliver_seconds"],
        "rate": rate,
        "raw_rate": raw_rate,
        "raw_before": before["rate"],
        "raw_after": after["rate"],
        "ratio": rate / raw_rate,
        "cpu_bound_rate": bound,
        "cpu_bound_ratio": bound / raw_rate if bound else None,
        "rss_mb": edition["rss_mb"],
        "helper_rss_mb": edition["helper_rss_mb"],
        # CPU per mail: the planning process (alone it does all the work) and the sink.
        "edition_cpu_ms": per_mail(edition["cpu_seconds"], stats["count"], 1000),
        "sink_cpu_ms": per_mail(stats.get("cpu", 0.0), stats["count"], 1000),
        "raw_sink_cpu_ms": after["sink_cpu_ms"],
        # The whole machine's CPU per mail (None off Linux); the bound above is the rate its
        # cores would cap that at: the most this code could reach here if it never waited.
        "machine_cpu_ms": per_mail(edition["machine_cpu_seconds"], stats["count"], 1000),
        "database_cpu_ms": per_mail(edition["database_cpu_seconds"], stats["count"], 1000),
        # What the sink was sent, per mail: the edition's and raw's (after) should match.
        "kb": per_mail(stats.get("bytes", 0), stats["count"], 1 / 1000),
        "lines": per_mail(stats.get("lines", 0), stats["count"]),
        "raw_kb": after["kb"],
        "raw_lines": after["lines"],
        "round_trips": edition["round_trips"],
        "per_1000": per_thousand,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_import":
        child_import(argv[1], int(argv[2]), int(argv[3]))
        return 0
    if argv and argv[0] == "_edition":
        result = child_edition(argv[1], int(argv[2]), int(argv[3]), argv[4])
        print(json.dumps(result), flush=True)
        return 0
    if argv and argv[0] == "_helper":
        child_helper(argv[1], int(argv[2]), datetime.fromisoformat(argv[3]))
        return 0
    if argv and argv[0] == "_raw":
        result = child_raw(int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]))
        print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="delivering processes: the planning one plus N-1 `digest worker`s (default: 1 2)",
    )
    parser.add_argument(
        "--planning",
        choices=["first", "scheduler"],
        default="first",
        help="first: plan every school, then deliver (default); scheduler: as `digest "
        "scheduler` with its embedded worker, schools planned in the event loop's threads "
        "while it delivers",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2,000)")
    args = parser.parse_args(argv)
    from digest.settings import load_settings

    if args.quick:
        args.sizes = [2_000]
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at start; "
        f"planning: {args.planning}; event loop: {load_settings().event_loop} (DIGEST_EVENT_LOOP)",
        flush=True,
    )
    print(
        "| backend | guardians | processes | schools | mails sent | plan s | deliver s | "
        "newsletters/s | raw smtplib/s (before, after) | ratio | CPU ms/mail, edition + sink | "
        "machine CPU ms/mail (database) | cores' bound: /s, ratio | "
        "KB, lines a mail: edition, raw | peak RSS MB | round trips | per 1,000 planned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    results = []
    for backend in backends:
        for size, workers in itertools.product(args.sizes, args.workers):
            r = one_run(backend, size, args.seed, args.pg_admin_url, workers, args.planning)
            results.append(r)
            rss = f"{r['rss_mb']:.0f}"
            cpu = f"{r['edition_cpu_ms']:.1f} + {r['sink_cpu_ms']:.1f}"
            if workers > 1:  # the helpers' CPU is not counted: only the sink's is meaningful
                cpu = f"– + {r['sink_cpu_ms']:.1f}"
            cpu += f" (raw: sink {r['raw_sink_cpu_ms']:.1f})"
            machine, bound = "–", "–"
            if r["machine_cpu_ms"] is not None:
                machine = f"{r['machine_cpu_ms']:.1f}"
                if r["database_cpu_ms"] is not None:
                    machine += f" ({r['database_cpu_ms']:.1f})"
                bound = f"{r['cpu_bound_rate']:.0f}, {r['cpu_bound_ratio']:.2f}"
            if r["helper_rss_mb"]:
                rss += f" (+{r['helper_rss_mb']:.0f} each)"
            print(
                f"| {backend} | {size:,} | {workers} | {r['schools']} | {r['sent']:,} | "
                f"{r['plan_s']:.1f} | "
                f"{r['deliver_s']:.1f} | {r['rate']:.0f} | "
                f"{r['raw_rate']:.0f} ({r['raw_before']:.0f}, {r['raw_after']:.0f}) | "
                f"{r['ratio']:.3f} | {cpu} | {machine} | {bound} | "
                f"{r['kb']:.1f}, {r['lines']:.0f}; {r['raw_kb']:.1f}, {r['raw_lines']:.0f} | "
                f"{rss} | {r['round_trips']} | "
                f"{r['per_1000']:.1f} |",
                flush=True,
            )
    for backend in backends:
        sizes = {
            r["guardians"]: r["rss_mb"]
            for r in results
            if r["backend"] == backend and r["workers"] == args.workers[0]
        }
        if len(sizes) >= 2:
            small, large = min(sizes), max(sizes)
            print(
                f"{backend}: peak RSS at {large:,} / at {small:,} = "
                f"{sizes[large] / sizes[small]:.2f} (target <= 1.2)"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
