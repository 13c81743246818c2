"""Log lines for operators: plain text or one JSON object per line, ids only, never addresses.

The JSON formatter is our own small ``logging.Formatter`` (no dependency for forty lines): each
line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the ids a call passed with
``extra=`` (``delivery_id``, ``edition_id``, …) and ``exception`` when there is one. Log calls
carry ids, not addresses, tokens or post text; ``Redact`` is the last line of defence: anything
that looks like an email address or one of our signed link tokens is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from digest.settings import Settings

ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*", re.UNICODE)
# A signed link's path (``/u/<token>``), and a bare itsdangerous token: base64url parts joined by
# dots, the last one (the signature) at least 27 characters.
LINK_PATH = re.compile(r"(/(?:p|u|media|gallery|ics)/)[^/\s?#\"']+")
TOKEN = re.compile(r"\b[\w-]{2,}(?:\.[\w-]{4,})?\.[\w-]{27,}\b")

# Everything a LogRecord has of its own; any other attribute came in through ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """``text`` with email addresses and signed tokens masked."""
    text = ADDRESS.sub("<address>", text)
    text = LINK_PATH.sub(r"\1<token>", text)
    return TOKEN.sub("<token>", text)


class Redact(logging.Filter):
    """Masks addresses and tokens in the message, the extras and the traceback of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call added with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extras, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extras(record).items():
            line[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class TextLines(logging.Formatter):
    """``time level logger message key=value…``, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extras(record).items())
        if not fields:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} {fields}{newline}{rest}"


def configure_logging(
    settings: Settings | None, verbose: bool, stream: TextIO | None = None
) -> None:
    """Send every logger's records (ours, uvicorn's, warnings) to standard error, redacted.

    Without settings (they did not load) the lines are text; INFO and up with ``verbose``.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    as_json = settings is not None and settings.log_format == "json"
    handler.setFormatter(JsonLines() if as_json else TextLines())
    handler.addFilter(Redact())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # Uvicorn's own handlers would bypass the format and the redaction.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)
