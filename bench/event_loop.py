"""The SMTP dialogue's CPU per mail on uvloop and on asyncio's own event loop (DIGEST_EVENT_LOOP).

The delivering processes drive their connections on one event loop. This sends the same
generated newsletters through our SMTP transport (``digest.transports``, 8 connections, as
``digest worker`` does) to ``sink.py --count-only`` in its own process, once on each loop, in
fresh processes taking turns, and prints each round's CPU milliseconds per mail (the sending
process's user and system time, from the first connection to the last reply; no planning, no
rendering, no database) and mails per second. Rounds alternate so that a machine whose speed
drifts weighs on both loops alike; the medians and their ratio close the table.

    .venv/bin/python bench/event_loop.py [--count 3000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from edition import board_newsletters, sink  # noqa: E402

LOOPS = ("asyncio", "uvloop")
CONNECTIONS = 8


def child_send(port: int, loop: str, count: int, mails_file: Path) -> dict[str, Any]:
    """Send ``count`` mails (the file's, round again) on ``loop``; CPU and wall time."""
    import asyncio

    from digest.settings import load_settings
    from digest.transports import open_transport
    from digest.worker import run_loop

    mails: list[bytes] = pickle.loads(mails_file.read_bytes())
    settings = load_settings(event_loop=loop)

    async def send_all() -> None:
        transport = open_transport(f"smtp://127.0.0.1:{port}?tls=none", pool_size=CONNECTIONS)
        numbers = iter(range(count))

        async def connection() -> None:
            for n in numbers:
                await transport.send(
                    mails[n % len(mails)],
                    sender="bounce@bench.example",
                    recipients=[f"loop{n:06d}@ouders.example"],
                )

        try:
            await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
        finally:
            await transport.close()

    cpu, wall = time.process_time(), time.perf_counter()
    run_loop(send_all(), settings)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"loop": loop, "cpu_ms": cpu / count * 1000, "per_second": count / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=3000, help="mails per round and loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--guardians", type=int, default=800, help="the board the mails are of")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 mails, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds = 300, 1
    mails = board_newsletters(args.guardians, args.seed)
    average_kb = sum(map(len, mails)) / len(mails) / 1024
    with tempfile.TemporaryDirectory() as folder:
        mails_file = Path(folder, "mails.pickle")
        mails_file.write_bytes(pickle.dumps(mails))
        with sink(Path(folder), "--count-only") as (port, stats):
            print(
                f"{len(mails)} generated newsletters ({average_kb:.1f} KB on average), "
                f"{args.count} a round over {CONNECTIONS} connections"
            )
            print("| round | loop | CPU ms/mail | mails/s |\n|---|---|---|---|", flush=True)
            figures: dict[str, list[dict[str, Any]]] = {loop: [] for loop in LOOPS}
            for number in range(1, args.rounds + 1):
                for loop in LOOPS:
                    command = [sys.executable, __file__, "_send", str(port), loop]
                    command += [str(args.count), str(mails_file)]
                    out = subprocess.run(command, check=True, capture_output=True, text=True)
                    result = json.loads(out.stdout.splitlines()[-1])
                    figures[loop].append(result)
                    print(
                        f"| {number} | {loop} | {result['cpu_ms']:.3f} | "
                        f"{result['per_second']:,.0f} |",
                        flush=True,
                    )
    accepted = stats.get("count", 0)
    sent = args.count * args.rounds * len(LOOPS)
    print(f"the sink accepted {accepted:,} of {sent:,} mails")
    if accepted != sent:
        print("mails went missing: the figures do not count", file=sys.stderr)
        return 1
    cpu = {loop: statistics.median(r["cpu_ms"] for r in figures[loop]) for loop in LOOPS}
    rate = {loop: statistics.median(r["per_second"] for r in figures[loop]) for loop in LOOPS}
    for loop in LOOPS:
        print(f"median {loop}: {cpu[loop]:.3f} ms of CPU a mail, {rate[loop]:,.0f} mails/s")
    print(f"uvloop's CPU a mail against asyncio's: {cpu['uvloop'] / cpu['asyncio']:.2f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_send"]:
        port, loop, count, mails_file = sys.argv[2:6]
        print(json.dumps(child_send(int(port), loop, int(count), Path(mails_file))))
        sys.exit(0)
    sys.exit(main())
