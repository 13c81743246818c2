"""Late bounces: delivery status notifications (RFC 3464) read from a Maildir or files.

Through a relay, most failures come back after the relay accepted the mail, as a report to the
envelope sender (``DIGEST_BOUNCE_ADDRESS``). Each recipient block of a report is treated like the
same reply at RCPT time:

==============================  ===================================  ========================
Action, Status                  outbox row                           address
==============================  ===================================  ========================
failed, 5.1.x or 5.2.1          ``failed``                           suppressed (reason, time)
failed, any other 5.x.x         ``failed`` (5.7.x for one address,   -
                                mailbox full, content refused ...)
failed, 4.x.x                   ``expired``: the relay's retries     -
                                ran out, the mail never arrived
delayed, delivered, relayed,    unchanged: the relay still tries,    -
expanded                        or the mail arrived
==============================  ===================================  ========================

5.1.7 and 5.1.8 name *our* sender address, so they never suppress a parent's. ``last_reply``
becomes ``"<status> bounced: <diagnostic>"``; a row already ``failed`` keeps its reply.

A block is matched to an outbox row by the Message-ID of the returned message (its
``message/rfc822`` or ``text/rfc822-headers`` part) **and** the recipient (Final-Recipient or
Original-Recipient, lower-cased). A report without the original's Message-ID, or naming another
address, is counted ``unmatched`` and changes nothing: anyone can mail our bounce address, and
only the receiving servers know the Message-ID, so a forged report cannot suppress a parent.

Reading is idempotent (a row already failed and an address already suppressed stay as they are,
counted ``already_recorded``). In a Maildir, the unread mails (in ``new/``, or in ``cur/``
without the Seen flag) are read and then marked read (moved to ``cur/`` with ``:2,S``), so a
suppression an administrator lifted is not brought back by the same old report; a directory or a
single file is read whole every time. Mails that are no delivery status report (auto-replies,
spam) are counted and left alone. Logs carry delivery ids, never addresses.
"""

from __future__ import annotations

import base64
import binascii
import email
import logging
import os
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest.errors import BounceSourceError
from digest.models import Delivery, DeliveryStatus, utcnow
from digest.render import first_part_message_id
from digest.suppressions import add_suppression

__all__ = [
    "BounceOutcome",
    "BounceSummary",
    "DeliveryReport",
    "RecipientReport",
    "apply_report",
    "parse_report",
    "read_bounces",
    "suppresses_address",
]

log = logging.getLogger(__name__)

_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
# The returned message, or its headers, in forms read as text (message/rfc822 is parsed).
_RETURNED_PARTS = frozenset({"text/rfc822-headers", "message/global-headers", "message/global"})
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BLOCK_BREAK = re.compile(rb"\r?\n(?:[ \t]*\r?\n)+")
_SEEN = "S"


class BounceOutcome(StrEnum):
    """What one recipient block (or one unusable mail) came to."""

    SUPPRESSED = "suppressed"  # the row failed and the address is suppressed
    FAILED = "failed"
    EXPIRED = "expired"
    IGNORED = "ignored"  # delayed, delivered, relayed, expanded
    ALREADY_RECORDED = "already_recorded"
    UNMATCHED = "unmatched"
    NOT_A_REPORT = "not_a_report"
    UNREADABLE = "unreadable"  # the file could not be read (vanished, no permission)


@dataclass(frozen=True)
class RecipientReport:
    """One per-recipient block of a delivery status notification."""

    final_recipient: str | None
    original_recipient: str | None
    action: str  # lower-cased: failed, delayed, delivered, relayed, expanded
    status: str | None  # the RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None  # the remote server's reply, without its type ("smtp;")

    @property
    def addresses(self) -> frozenset[str]:
        """The recipient as reported, final and original, lower-cased."""
        return frozenset(a for a in (self.final_recipient, self.original_recipient) if a)


@dataclass(frozen=True)
class DeliveryReport:
    """A parsed RFC 3464 report: the returned message's Message-ID and the recipient blocks."""

    message_id: str | None
    recipients: tuple[RecipientReport, ...]


@dataclass
class BounceSummary:
    """What reading a path did: mails read and the count of each outcome."""

    mails: int = 0
    counts: dict[BounceOutcome, int] = field(default_factory=dict)

    def add(self, outcome: BounceOutcome) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def suppresses_address(status: str | None) -> bool:
    """Whether a permanent failure with this enhanced code means "no such address".

    5.1.x (bad mailbox, bad domain, null MX ...) and 5.2.1 (mailbox disabled), but not 5.1.7 and
    5.1.8, which are about the sender's address: suppressing for those would suppress everyone.
    """
    if status is None:
        return False
    return status == "5.2.1" or (status.startswith("5.1.") and status not in ("5.1.7", "5.1.8"))


# --- parsing --------------------------------------------------------------------------------


def parse_report(data: bytes) -> DeliveryReport | None:
    """The delivery status report in a mail, or None if the mail is not one."""
    message = email.message_from_bytes(data, policy=compat32)
    report = next(
        (
            part
            for part in message.walk()
            if part.get_content_type() == "multipart/report"
            and str(part.get_param("report-type", "")).lower() in _REPORT_TYPES
        ),
        None,
    )
    if report is None or not report.is_multipart():
        return None
    parts: list[Message] = [p for p in report.get_payload() if isinstance(p, Message)]
    status_part = next((p for p in parts if p.get_content_type() in _STATUS_PARTS), None)
    if status_part is None:
        return None
    recipients = tuple(
        _recipient(block) for block in _status_blocks(status_part) if _is_recipient_block(block)
    )
    if not recipients:
        return None
    return DeliveryReport(message_id=_returned_message_id(parts), recipients=recipients)


def _status_blocks(part: Message) -> list[Message]:
    parser = BytesHeaderParser(policy=compat32)
    chunks = _BLOCK_BREAK.split(_part_bytes(part))
    return [parser.parsebytes(chunk.lstrip(b"\r\n")) for chunk in chunks if chunk.strip()]


def _part_bytes(part: Message) -> bytes:
    """A part's decoded body, whether the stdlib parsed it into messages or left it as text.

    The stdlib parses every ``message/*`` body as messages: message/delivery-status as one per
    block, message/global-delivery-status as one whose headers are the first block.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        raw = part.get_payload(decode=True)
        return raw if isinstance(raw, bytes) else b""
    raw = b"\n".join(m.as_bytes() for m in payload if isinstance(m, Message))
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(raw)
        if encoding == "quoted-printable":
            return quopri.decodestring(raw)
    except binascii.Error:
        return b""
    return raw


def _is_recipient_block(block: Message) -> bool:
    return block.get("Final-Recipient") is not None or block.get("Action") is not None


def _recipient(block: Message) -> RecipientReport:
    status = _STATUS.search(_field(block, "Status") or "")
    diagnostic = _field(block, "Diagnostic-Code")
    if diagnostic:
        kind, semicolon, rest = diagnostic.partition(";")
        if semicolon and kind.strip() and " " not in kind.strip():  # "smtp; 550 ..."
            diagnostic = rest.strip() or None
    return RecipientReport(
        final_recipient=_address(_field(block, "Final-Recipient")),
        original_recipient=_address(_field(block, "Original-Recipient")),
        action=(_field(block, "Action") or "").lower(),
        status=".".join(status.groups()) if status else None,
        diagnostic=diagnostic,
    )


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    if isinstance(value, Header):  # raw 8-bit text (RFC 6533 allows UTF-8 here)
        value = "".join(
            part.decode("utf-8", "replace") if isinstance(part, bytes) else part
            for part, _charset in decode_header(value)
        )
    text = " ".join(str(value).split())  # unfolded, whitespace collapsed
    return text or None


def _address(value: str | None) -> str | None:
    """``rfc822; Name@Example.org`` → ``name@example.org``."""
    if value is None:
        return None
    _kind, _semicolon, address = value.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address.lower() or None


def _returned_message_id(parts: list[Message]) -> str | None:
    for part in parts:
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind == "message/rfc822" and isinstance(payload, list) and payload:
            headers = payload[0]
        elif kind in _RETURNED_PARTS:
            headers = BytesHeaderParser(policy=compat32).parsebytes(_part_bytes(part))
        else:
            continue
        value = _field(headers, "Message-ID") if isinstance(headers, Message) else None
        if value:
            found = _MESSAGE_ID.search(value)
            return found.group(0) if found else f"<{value.strip('<> ')}>"
    return None


# --- applying -------------------------------------------------------------------------------


def apply_report(
    session: Session, report: DeliveryReport, *, at: datetime | None = None
) -> list[BounceOutcome]:
    """Record each recipient block of ``report`` on its outbox row; one outcome per block."""
    moment = at or utcnow()
    return [_apply(session, report.message_id, block, moment) for block in report.recipients]


def _apply(
    session: Session, message_id: str | None, block: RecipientReport, at: datetime
) -> BounceOutcome:
    if block.action != "failed":
        return BounceOutcome.IGNORED
    code = block.status or ""
    if code.startswith("2."):
        return BounceOutcome.IGNORED  # "failed" with a success code: nothing we can act on
    row = _find_row(session, message_id, block.addresses)
    if row is None:
        return BounceOutcome.UNMATCHED
    reply = f"{block.status or 'failed'} bounced: {block.diagnostic or 'no diagnostic'}"
    if code.startswith("4."):
        # The relay gave up after transient failures: its retries ran out, not the address.
        if row.status is not DeliveryStatus.SENT:
            return BounceOutcome.ALREADY_RECORDED
        _settle(row, DeliveryStatus.EXPIRED, reply)
        log.info("delivery %s expired at the relay (%s)", row.id, code)
        return BounceOutcome.EXPIRED
    changed = False
    if row.status not in (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED):
        _settle(row, DeliveryStatus.FAILED, reply)
        log.info("delivery %s bounced (%s)", row.id, code or "no status")
        changed = True
    if suppresses_address(block.status):
        _row, added = add_suppression(session, row.address, reply, at=at)
        if added:
            log.info("delivery %s: its address is suppressed", row.id)
        changed = changed or added
        return BounceOutcome.SUPPRESSED if changed else BounceOutcome.ALREADY_RECORDED
    return BounceOutcome.FAILED if changed else BounceOutcome.ALREADY_RECORDED


def _find_row(
    session: Session, message_id: str | None, addresses: frozenset[str]
) -> Delivery | None:
    if message_id is None or not addresses:
        return None
    candidates = [message_id, message_id[1:-1]]
    first_part = first_part_message_id(message_id)  # a later part of a multi-part newsletter
    if first_part is not None:
        candidates += [first_part, first_part[1:-1]]
    rows = session.scalars(
        select(Delivery).where(Delivery.message_id.in_(candidates)).with_for_update()
    )
    return next((row for row in rows if row.address.lower() in addresses), None)


def _settle(row: Delivery, status: DeliveryStatus, reply: str) -> None:
    row.status = status
    row.reason = None
    row.last_reply = reply
    row.next_attempt_at = None
    row.lease_until = None


# --- reading a path -------------------------------------------------------------------------


def read_bounces(
    sessions: sessionmaker[Session], path: Path, *, at: datetime | None = None
) -> BounceSummary:
    """Read every report under ``path`` (a Maildir, a directory of mails, or one mail)."""
    moment = at or utcnow()
    summary = BounceSummary()
    maildir = _is_maildir(path)
    for mail in _mails(path, maildir):
        summary.mails += 1
        try:
            data = mail.read_bytes()
        except OSError as exc:
            log.warning("bounce file %s unreadable: %s", mail.name, exc.strerror)
            summary.add(BounceOutcome.UNREADABLE)
            continue
        try:
            report = parse_report(data)
        except Exception as exc:  # a mail from anyone: a parser failure must not stop the rest
            log.warning("bounce file %s cannot be parsed: %s", mail.name, type(exc).__name__)
            report = None
        if report is None:
            summary.add(BounceOutcome.NOT_A_REPORT)
        else:
            with sessions() as session, session.begin():
                outcomes = apply_report(session, report, at=moment)
            for outcome in outcomes:
                summary.add(outcome)
        if maildir:
            _mark_seen(mail)
    return summary


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def _mails(path: Path, maildir: bool) -> Iterator[Path]:
    if maildir:
        for name in sorted(os.listdir(path / "new")):
            if not name.startswith("."):
                yield path / "new" / name
        for name in sorted(os.listdir(path / "cur")):
            if not name.startswith(".") and _SEEN not in _flags(name):
                yield path / "cur" / name
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.name.startswith("."):
                yield child
    elif path.is_file():
        yield path
    else:
        raise BounceSourceError(f"{path}: no such file, directory or Maildir")


def _flags(name: str) -> str:
    _unique, separator, info = name.partition(":2,")
    return info if separator else ""


def _mark_seen(mail: Path) -> None:
    """Move a Maildir mail to ``cur/`` with the Seen flag, as a mail client does after reading."""
    unique, _separator, flags = mail.name.partition(":2,")
    target = mail.parent.parent / "cur" / f"{unique}:2,{''.join(sorted(set(flags) | {_SEEN}))}"
    try:
        mail.rename(target)
    except OSError as exc:  # another reader took it; it was applied, and applying is idempotent
        log.warning("bounce file %s not marked read: %s", mail.name, exc.strerror)
