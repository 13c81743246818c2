"""A recording SMTP sink for the crash-safety benchmark: one log line per accepted delivery.

Run as its own process (the worker under test is killed; the sink must outlive it)::

    python bench/sink.py --log accepted.tsv [--port-file port.txt] [--delay-ms 20]
    python bench/sink.py --count-only [--port-file port.txt]


It listens on 127.0.0.1 on a port the OS picks, prints ``port <n>`` on standard output (and
writes the number to ``--port-file``), and for every message it accepts appends one line per
envelope recipient: ``<address>\\t<Message-ID>\\n``. The line is written and flushed *before*
the 250 reply goes out, so a message the worker believes accepted is always in the log; the
converse may fail (the worker can die between our 250 and its own record), which is exactly
the duplicate the benchmark measures. SIGTERM or SIGINT stops it after the open dialogues.

``--count-only`` (bench/edition.py) logs nothing: on SIGTERM it prints one line
``stats {"count": n, "bytes": b, "lines": l, "first": t0, "last": t1, "cpu": s}`` (the accepted
messages' bytes and lines in all; epoch seconds of the first and last 250; CPU seconds from
listening to the last 250).
``--delay-ms`` answers each message that much later, as a distant relay would (bench/scale_out.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import IO

from aiosmtpd.smtp import SMTP, Envelope, Session

# The header block ends at the first empty line; folded continuation lines start with blanks.
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*((?:.|\r?\n[ \t])*?)\r?$", re.IGNORECASE | re.M)


def message_id_of(content: bytes) -> str:
    """The Message-ID header of a raw message, unfolded; ``-`` when it has none."""
    head = re.split(rb"\r?\n\r?\n", content, maxsplit=1)[0]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return "-"
    return b" ".join(found.group(1).split()).decode("ascii", "replace")


class RecordingHandler:
    """aiosmtpd hook: log every recipient of an accepted message (unless ``log`` is None), 250."""

    def __init__(self, log: IO[str] | None, delay: float = 0.0) -> None:
        self.log = log
        self.delay = delay
        self.accepted = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu_start = self.cpu_last = 0.0
        self.bytes = self.lines = 0  # of the accepted messages, as they came in

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.log is not None:
            message_id = message_id_of(bytes(envelope.original_content or b""))
            # One write of whole lines: the benchmark reads the log while we append to it.
            self.log.write("".join(f"{rcpt.lower()}\t{message_id}\n" for rcpt in envelope.rcpt_tos))
            self.log.flush()
        self.accepted += 1
        content = envelope.original_content or b""
        self.bytes += len(content)
        self.lines += content.count(b"\n")
        self.last = time.time()
        self.cpu_last = time.process_time()
        if self.accepted == 1:
            self.first = self.last
        return f"250 2.0.0 OK queued as S{self.accepted}"


async def serve(
    log_path: Path | None, port_file: Path | None, host: str = "127.0.0.1", delay: float = 0.0
) -> RecordingHandler:
    """Accept (and record, given a log) mail until SIGTERM/SIGINT; returns the handler."""
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("a", encoding="utf-8")) if log_path else None
        handler = RecordingHandler(log, delay)

        def protocol() -> SMTP:
            # A fixed hostname skips a getfqdn() lookup per connection.
            return SMTP(handler, hostname="sink.test", enable_SMTPUTF8=True, loop=loop)

        server = await loop.create_server(protocol, host=host, port=0)
        handler.cpu_start = time.process_time()  # start-up excluded
        port = server.sockets[0].getsockname()[1]
        if port_file is not None:
            # Written whole, then renamed: a reader polling for the file never sees half.
            partial = port_file.with_suffix(".part")
            partial.write_text(f"{port}\n")
            partial.replace(port_file)
        print(f"port {port}", flush=True)

        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        await server.wait_closed()
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log", type=Path, help="append accepted mail here")
    parser.add_argument("--count-only", action="store_true", help="no log: print stats at exit")
    parser.add_argument("--port-file", type=Path, help="write the listening port here")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before each 250")
    args = parser.parse_args(argv)
    if (args.log is None) == (not args.count_only):
        parser.error("give --log or --count-only")
    handler = asyncio.run(serve(args.log, args.port_file, delay=args.delay_ms / 1000))
    stats = {
        "count": handler.accepted,
        "bytes": handler.bytes,
        "lines": handler.lines,
        "first": handler.first,
        "last": handler.last,
        "cpu": max(0.0, handler.cpu_last - handler.cpu_start),  # seconds, until the last 250
    }
    print(f"stats {json.dumps(stats)}", flush=True)
    print(f"accepted {handler.accepted}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
