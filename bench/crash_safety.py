"""Crash-safety benchmark: SIGKILL the delivery worker mid-edition, restart it, count the damage.

For each run and each backend (SQLite file, PostgreSQL database made for the run and dropped
after) it imports a school of ``--recipients`` newsletter guardians, plans the edition, starts
a recording SMTP sink (``bench/sink.py``) in its own process and ``digest worker`` in another,
kills the worker with SIGKILL at a random moment of the sending, notes what the database says
at that instant, restarts the worker until every row is final, and compares the sink's log with
the planned rows:

- lost: an address the plan queued that the sink never accepted;
- duplicated: an address the sink accepted more than once;
- in flight: rows ``sending`` in the database right after the kill, the most that may repeat.

A run passes with 0 lost, duplicates <= in flight, nothing to an address the plan did not
queue, and every row ``sent`` with a Message-ID the sink saw for that address. Exit status 1
when any run fails. See bench/README.md for how to read the table.

    /work/.venv/bin/python bench/crash_safety.py --runs 20 --backend both
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from digest.db import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from big_school import SCHOOL_ID, latest_friday_cutoff, school_document

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass
class Options:
    runs: int
    backends: list[str]
    recipients: int
    seed: int
    via: str
    lease: float
    concurrency: int
    restart: str
    kill_before: float  # the kill comes after at most this share of the edition was accepted
    jitter: float
    timeout: float
    pg_admin_url: str
    keep: bool
    workdir: Path
    json_out: Path | None


@dataclass
class RunResult:
    backend: str
    run: int
    seed: int
    target: int = 0  # kill after the sink accepted this many …
    jitter: float = 0.0  # … plus this many seconds
    kill_at: float | None = None  # seconds after the worker started; None: no kill
    accepted_at_kill: int = 0  # the sink's count right after the kill
    sent_at_kill: int = 0  # rows ``sent`` in the database right after the kill
    in_flight: int = 0  # rows ``sending`` right after the kill
    unrecorded: int = 0  # accepted by the sink, not ``sent`` in the database, at the kill
    planned: int = 0
    lost: int = 0
    duplicated: int = 0  # addresses accepted more than once
    extra_copies: int = 0  # messages beyond the first, over all addresses
    unexpected: int = 0  # accepted for an address the plan did not queue
    not_sent: int = 0  # rows not ``sent`` at the end
    wrong_message_id: int = 0  # ``sent`` rows whose Message-ID the sink never saw for them
    restart_seconds: float = 0.0
    exit_codes: list[int | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kept: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --- processes --------------------------------------------------------------------------------


def _env(db_url: str, mail_url: str, options: Options) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATABASE_URL=db_url,
        DIGEST_MAIL_URL=mail_url,
        DIGEST_MAIL_FROM="nieuwsbrief@linde.example",
        DIGEST_MESSAGE_ID_DOMAIN="bench.linde.example",
        DIGEST_LEASE_SECONDS=f"{options.lease:g}",
        DIGEST_SEND_CONCURRENCY=str(options.concurrency),
        # A transient failure (none is expected from the sink) retries within seconds.
        DIGEST_RETRY_FIRST_MINUTES="0.05",
    )
    return env


def _digest(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run one ``digest`` command to its end; its output goes to ``log``."""
    with log.open("a") as out:
        out.write(f"$ digest {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [PYTHON, "-m", "digest", *args], env=env, stdout=out, stderr=out, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"digest {' '.join(args)} exited {done.returncode}; see {log}")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    out.write(f"$ {' '.join(args)}\n".encode())
    out.flush()
    try:
        return subprocess.Popen(args, env=env, stdout=out, stderr=out)
    finally:
        out.close()  # the child has its own descriptor


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """SIGTERM, wait; SIGKILL if it does not stop in time. Returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
    return process.returncode


class Sink:
    """bench/sink.py in its own process, and an incremental reader of its log."""

    def __init__(self, folder: Path) -> None:
        self.log = folder / "accepted.tsv"
        self.log.touch()
        port_file = folder / "sink.port"
        self.process = _spawn(
            [PYTHON, str(BENCH / "sink.py"), "--log", str(self.log), "--port-file", str(port_file)],
            os.environ.copy(),
            folder / "sink.out",
        )
        until = time.monotonic() + 15
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > until:
                raise RuntimeError(f"the sink did not start; see {folder / 'sink.out'}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self._offset = 0
        self._lines = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def count(self) -> int:
        """How many deliveries the sink has logged so far (reads only what is new)."""
        with self.log.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # a line still being written counts next time
        self._lines += chunk.count(b"\n", 0, complete)
        self._offset += complete
        return self._lines

    def accepted(self) -> list[tuple[str, str]]:
        """Every (address, Message-ID) the sink accepted, in order."""
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [(a, m) for a, _, m in (line.partition("\t") for line in lines)]

    def stop(self) -> None:
        _stop(self.process)


# --- databases --------------------------------------------------------------------------------


@contextmanager
def database(backend: str, folder: Path, options: Options) -> Iterator[str]:
    """A fresh database for one run: a SQLite file, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'digest.db'}"
        return
    admin = make_engine(options.pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"digest_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield options.pg_admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT id, address, status, attempts, message_id, last_reply "
                "FROM deliveries ORDER BY id"
            )
        )
        return [dict(row._mapping) for row in result]


def _by_status(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(row["status"]) for row in rows)


def _open_rows(engine: Engine) -> int:
    """Rows that may still be sent: queued, sending (leased or not) or retry."""
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending', 'retry')")
        ).scalar()
    return int(count or 0)


def _has_beaten(engine: Engine, pid: int) -> bool:
    """Whether the worker with this process id has written its heartbeat (``role:host:pid``)."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM heartbeats WHERE id LIKE :id"), {"id": f"worker:%:{pid}"}
        ).scalar()
    return bool(found)


# --- one run ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _kill_at_random(
    worker: subprocess.Popen[bytes], sink: Sink, result: RunResult, started: float
) -> bool:
    """SIGKILL the worker once the sink accepted ``target`` mails plus ``jitter`` s; False if
    the worker ended first."""
    while sink.count() < result.target:
        if worker.poll() is not None:
            return False
        time.sleep(0.002)
    deadline = time.monotonic() + result.jitter
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            return False
        time.sleep(min(0.002, max(deadline - time.monotonic(), 0)))
    if worker.poll() is not None:
        return False
    os.kill(worker.pid, signal.SIGKILL)
    result.kill_at = time.monotonic() - started
    worker.wait()
    result.exit_codes.append(worker.returncode)
    return True


def _restart(
    env: dict[str, str], engine: Engine, options: Options, folder: Path, result: RunResult
) -> None:
    """Start the worker again and let it finish the edition (rows left ``sending`` included)."""
    log = folder / "worker-2.log"
    started = time.monotonic()
    deadline = started + options.lease + options.timeout
    if options.via == "send":
        # `digest send` takes its own clock: send "later", after every lease has run out.
        later = datetime.now(UTC) + timedelta(seconds=max(options.lease, 600) + 60)
        _digest(["send", "--at", later.isoformat()], env, log)
        result.exit_codes.append(0)
    elif options.restart == "once":
        # Every lease was taken before the kill, so it has run out `lease` seconds after it.
        time.sleep(options.lease + 0.5)
        with log.open("ab") as out:
            done = subprocess.run(
                [PYTHON, "-m", "digest", "-v", "worker", "--once"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=options.timeout,
                check=False,
            )
        result.exit_codes.append(done.returncode)
        if done.returncode != 0:
            result.problems.append(f"`digest worker --once` exited {done.returncode}")
    else:
        worker = _spawn([PYTHON, "-m", "digest", "-v", "worker", "--poll", "0.5"], env, log)
        try:
            while True:
                open_rows = _open_rows(engine)
                # Stopped once it is up: a SIGTERM while Python still imports is no shutdown
                # (the kill may come after the last send, leaving the restart nothing to do).
                if open_rows == 0 and _has_beaten(engine, worker.pid):
                    break
                if worker.poll() is not None:
                    result.problems.append(f"restarted worker exited {worker.returncode} early")
                    break
                if time.monotonic() > deadline:
                    result.problems.append(f"{open_rows} rows still open after the restart")
                    break
                time.sleep(0.25)
        finally:
            code = _stop(worker)
            result.exit_codes.append(code)
        if code != 0 and not result.problems:
            # SIGTERM should finish the sends in flight and exit cleanly.
            result.problems.append(f"the restarted worker exited {code} after SIGTERM")
    result.restart_seconds = time.monotonic() - started


def _judge(
    result: RunResult, planned: dict[str, int], rows: list[dict[str, Any]], sink: Sink
) -> None:
    """Lost, duplicated and unexpected mail from the sink's log; final rows against it."""
    accepted = sink.accepted()
    copies = Counter(address for address, _ in accepted)
    seen_ids: dict[str, set[str]] = {}
    for address, message_id in accepted:
        seen_ids.setdefault(address, set()).add(message_id)
    lost = sorted(set(planned) - set(copies))
    doubled = sorted(a for a, n in copies.items() if n > 1)
    unexpected = sorted(set(copies) - set(planned))
    not_sent = [row for row in rows if row["status"] != "sent"]
    wrong_id = [
        row
        for row in rows
        if row["status"] == "sent" and row["message_id"] not in seen_ids.get(row["address"], ())
    ]
    result.lost = len(lost)
    result.duplicated = len(doubled)
    result.extra_copies = sum(n - 1 for n in copies.values())
    result.unexpected = len(unexpected)
    result.not_sent = len(not_sent)
    result.wrong_message_id = len(wrong_id)

    def show(addresses: list[str]) -> str:
        by_address = {row["address"]: row for row in rows}
        shown = []
        for address in addresses[:5]:
            row = by_address.get(address, {})
            shown.append(
                f"{address} (row {row.get('id')}, {row.get('status')}, "
                f"attempts {row.get('attempts')}, reply {row.get('last_reply')!r})"
            )
        more = f" and {len(addresses) - 5} more" if len(addresses) > 5 else ""
        return "; ".join(shown) + more

    if lost:
        result.problems.append(f"lost {len(lost)}: {show(lost)}")
    if result.kill_at is not None and result.duplicated > result.in_flight:
        result.problems.append(
            f"{result.duplicated} duplicated > {result.in_flight} in flight: {show(doubled)}"
        )
    if result.kill_at is None:
        result.problems.append("no kill: the worker finished before the kill moment")
    if unexpected:
        result.problems.append(f"{len(unexpected)} unexpected addresses: {unexpected[:5]}")
    if not_sent:
        states = Counter(str(row["status"]) for row in not_sent)
        result.problems.append(
            f"{len(not_sent)} rows not sent at the end {dict(states)}: "
            f"{show([row['address'] for row in not_sent])}"
        )
    if wrong_id:
        result.problems.append(
            f"{len(wrong_id)} sent rows record a Message-ID the sink never saw for them: "
            f"{show([row['address'] for row in wrong_id])}"
        )


def run_once(
    backend: str, run: int, seed: int, document: Path, cutoff: str, options: Options
) -> RunResult:
    """One full kill-and-restart cycle on ``backend``; every process it starts is stopped."""
    rng = random.Random(seed)
    result = RunResult(backend=backend, run=run, seed=seed)
    result.target = rng.randint(1, max(1, int(options.recipients * options.kill_before)))
    # Half the kills fall the instant the sink logs its target-th mail: mid-burst, with mails
    # on the wire. The others wait up to --jitter more, to land anywhere in the worker's cycle
    # (claiming, rendering, sending, recording), where a uniform moment mostly finds rendering.
    on_the_wire = rng.random() < 0.5
    result.jitter = 0.0 if on_the_wire else round(rng.uniform(0, options.jitter), 3)
    folder = Path(tempfile.mkdtemp(prefix=f"{backend}-{run:02d}-", dir=options.workdir))
    sink: Sink | None = None
    worker: subprocess.Popen[bytes] | None = None
    engine: Engine | None = None
    try:
        with database(backend, folder, options) as db_url:
            sink = Sink(folder)
            env = _env(db_url, sink.url, options)
            setup = folder / "setup.log"
            _digest(["db", "upgrade"], env, setup)
            _digest(["import", str(document)], env, setup)
            _digest(["plan", "--school", SCHOOL_ID, "--at", cutoff], env, setup)
            engine = make_engine(db_url)
            rows = _rows(engine)
            planned = {row["address"]: row["id"] for row in rows if row["status"] == "queued"}
            result.planned = len(planned)
            if result.planned < options.recipients:
                raise RuntimeError(f"only {result.planned} rows queued by the plan")

            _say(
                f"  {backend} run {run} seed {seed}: {result.planned} queued; kill after "
                f"{result.target} accepted + {result.jitter:.3f} s"
            )
            if options.via == "send":
                command = [PYTHON, "-m", "digest", "-v", "send"]
            else:
                command = [PYTHON, "-m", "digest", "-v", "worker", "--poll", "0.5"]
            started = time.monotonic()
            worker = _spawn(command, env, folder / "worker-1.log")
            killed = _kill_at_random(worker, sink, result, started)
            worker = None
            if killed:
                time.sleep(0.2)  # a DATA the sink had whole before the kill is logged by now
                result.accepted_at_kill = sink.count()
                at_kill = _rows(engine)
                states = _by_status(at_kill)
                result.sent_at_kill = states["sent"]
                result.in_flight = states["sending"]
                accepted_addresses = {address for address, _ in sink.accepted()}
                result.unrecorded = sum(
                    1
                    for row in at_kill
                    if row["address"] in accepted_addresses and row["status"] != "sent"
                )
                _say(
                    f"  killed at {result.kill_at:.2f} s: sink {result.accepted_at_kill}, "
                    f"database {dict(states)}"
                )
                _restart(env, engine, options, folder, result)
            final = _rows(engine)
            _judge(result, planned, final, sink)
            engine.dispose()
            engine = None
    except Exception as exc:  # the bench itself failed: a failed run, with the reason
        result.problems.append(f"bench error: {exc}")
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        if sink is not None:
            sink.stop()
        if engine is not None:
            engine.dispose()
    if options.keep or not result.ok:
        result.kept = str(folder)
    else:
        _remove(folder)
    return result


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --- the report -------------------------------------------------------------------------------

COLUMNS = (
    ("backend", "{backend:<10}"),
    ("run", "{run:>3}"),
    ("seed", "{seed:>10}"),
    ("kill when", "{when:>12}"),
    ("kill at s", "{kill:>9}"),
    ("accepted", "{accepted:>8}"),
    ("sent@kill", "{sent:>9}"),
    ("in flight", "{flight:>9}"),
    ("unrecorded", "{unrec:>10}"),
    ("lost", "{lost:>4}"),
    ("dup", "{dup:>4}"),
    ("ok", "{ok:<3}"),
)


def header() -> str:
    cells = []
    for title, fmt in COLUMNS:
        width = fmt.split(":")[1].strip("<>}")
        align = "<" if "<" in fmt else ">"
        cells.append(f"{title:{align}{width}}")
    return "| " + " | ".join(cells) + " |"


def row_line(r: RunResult) -> str:
    values = {
        "backend": r.backend,
        "run": r.run,
        "seed": r.seed,
        "when": f"{r.target}+{r.jitter:.2f}s",
        "kill": f"{r.kill_at:.2f}" if r.kill_at is not None else "-",
        "accepted": r.accepted_at_kill,
        "sent": r.sent_at_kill,
        "flight": r.in_flight,
        "unrec": r.unrecorded,
        "lost": r.lost,
        "dup": r.duplicated,
        "ok": "yes" if r.ok else "NO",
    }
    return "| " + " | ".join(fmt.format(**values) for _, fmt in COLUMNS) + " |"


def rule() -> str:
    parts = []
    for _, fmt in COLUMNS:
        width = int(fmt.split(":")[1].strip("<>}"))
        parts.append("-" * (width + 1) + (":" if ">" in fmt else "-"))
    return "|" + "|".join(parts) + "|"


def summary(results: list[RunResult]) -> list[str]:
    lines = []
    for backend in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == backend]
        killed = [r for r in mine if r.kill_at is not None]
        in_flight = [r.in_flight for r in mine]
        lines.append(
            f"{backend}: {len(mine)} runs, {len(killed)} killed mid-edition, "
            f"{sum(r.ok for r in mine)} ok; lost {sum(r.lost for r in mine)} in total; "
            f"duplicated max {max((r.duplicated for r in mine), default=0)} per run "
            f"(total {sum(r.duplicated for r in mine)}, in flight at the kills: max "
            f"{max(in_flight, default=0)}, total {sum(in_flight)})"
            f"; accepted but unrecorded at the kill: max "
            f"{max((r.unrecorded for r in mine), default=0)}"
            f"; restart to done: max {max((r.restart_seconds for r in mine), default=0):.1f} s"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SIGKILL the delivery worker mid-edition and count lost and duplicated mail.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=20, help="runs per backend")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--recipients", type=int, default=2000, help="guardians in the edition")
    parser.add_argument(
        "--seed", type=int, help="seed of the first run (run i uses seed+i); default: random"
    )
    parser.add_argument(
        "--via",
        choices=["worker", "send"],
        default="worker",
        help="what is killed: `digest worker`, or `digest send` (restarted with --at after the "
        "lease)",
    )
    parser.add_argument(
        "--restart",
        choices=["daemon", "once"],
        default="daemon",
        help="daemon: start `digest worker` again at once and SIGTERM it when every row is "
        "final; once: wait out the lease, then `digest worker --once`",
    )
    parser.add_argument("--lease", type=float, default=3.0, help="DIGEST_LEASE_SECONDS")
    parser.add_argument("--concurrency", type=int, default=8, help="DIGEST_SEND_CONCURRENCY")
    parser.add_argument(
        "--kill-before",
        type=float,
        default=0.9,
        help="the kill comes after 1..this share of the edition was accepted by the sink",
    )
    parser.add_argument(
        "--jitter", type=float, default=1.5, help="and then after 0..this many seconds more"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds the restart may take to finish"
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "DIGEST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL URL allowed to CREATE and DROP DATABASE",
    )
    parser.add_argument("--keep", action="store_true", help="keep every run's folder and logs")
    parser.add_argument("--workdir", type=Path, help="where run folders go (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write results here")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="digest-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    options = Options(
        runs=args.runs,
        backends=["sqlite", "postgresql"] if args.backend == "both" else [args.backend],
        recipients=args.recipients,
        seed=seed,
        via=args.via,
        lease=args.lease,
        concurrency=args.concurrency,
        restart=args.restart,
        kill_before=args.kill_before,
        jitter=args.jitter,
        timeout=args.timeout,
        pg_admin_url=args.pg_admin_url,
        keep=args.keep,
        workdir=workdir,
        json_out=args.json_out,
    )

    cutoff = latest_friday_cutoff(datetime.now(UTC))
    document = workdir / "school.json"
    document.write_text(json.dumps(school_document(options.recipients, cutoff)))

    print(
        f"crash safety: {options.recipients} recipients, {options.runs} runs on "
        f"{', '.join(options.backends)}, killing `digest {options.via}`, restart "
        f"{options.restart if options.via == 'worker' else 'send --at'}, "
        f"DIGEST_SEND_CONCURRENCY={options.concurrency}, DIGEST_LEASE_SECONDS={options.lease:g}, "
        f"first seed {seed}, edition of {cutoff:%Y-%m-%d %H:%M %Z}, work in {workdir}",
        flush=True,
    )
    results: list[RunResult] = []
    for backend in options.backends:
        for run in range(1, options.runs + 1):
            _say(f"{backend} run {run}/{options.runs} …")
            began = time.monotonic()
            result = run_once(backend, run, seed + run - 1, document, cutoff.isoformat(), options)
            results.append(result)
            _say(f"{row_line(result)}  ({time.monotonic() - began:.0f} s)")
            for problem in result.problems:
                _say(f"    problem: {problem}")
            if result.kept:
                _say(f"    logs kept in {result.kept}")

    print()
    print(header())
    print(rule())
    for result in results:
        print(row_line(result))
    print()
    for line in summary(results):
        print(line)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED {r.backend} run {r.run} (seed {r.seed}): {'; '.join(r.problems)}")
        if r.kept:
            print(f"  logs: {r.kept}")
    if options.json_out:
        options.json_out.write_text(
            json.dumps([{**r.__dict__, "ok": r.ok} for r in results], indent=2, default=str)
        )
    if own_workdir and not options.keep and not failed:
        _remove(workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
