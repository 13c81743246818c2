"""Late bounces: delivery status notifications, built the way Postfix sends them, read from a
real Maildir and applied to an outbox that really sent its mail (into another Maildir)."""

from __future__ import annotations

import email
import logging
import mailbox
from datetime import timedelta
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from conftest import on_event_loop
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_cli import digest as run_digest

from digest.bounces import (
    BounceOutcome,
    BounceSummary,
    parse_report,
    read_bounces,
    suppresses_address,
)
from digest.deliver import Deliverer
from digest.ingest import import_document
from digest.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Recipient,
    SkipReason,
    Suppression,
)
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.render import part_message_id
from digest.settings import load_settings
from digest.suppressions import remove_suppression
from digest.transports import open_transport

CUTOFF = parse_instant("2026-11-27T16:00", "Europe/Amsterdam")
LATER = CUTOFF + timedelta(hours=3)  # when the bounces are read
SETTINGS = load_settings(
    mail_from="nieuwsbrief@digest.example",
    bounce_address="bounces@digest.example",
    base_url="https://digest.example",
)
P1 = "p1@ouders.example"
P2 = "p2@ouders.example"


# --- an outbox that sent its mail ------------------------------------------------------------


@pytest.fixture
def sent(sessions: sessionmaker[Session], small_school: dict[str, Any], tmp_path: Path):
    """The small school's week planned and sent into a Maildir: address → the mail as sent."""
    with sessions() as session, session.begin():
        import_document(session, small_school)
        plan_edition(session, "s1", CUTOFF)

    async def send() -> None:
        transport = open_transport(f"maildir://{tmp_path / 'outbox'}")
        try:
            await Deliverer(sessions, transport, SETTINGS).run(CUTOFF)
        finally:
            await transport.close()

    on_event_loop(send())
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    mails = {}
    for key in box.iterkeys():
        data = box.get_bytes(key)
        to = email.message_from_bytes(data, policy=default)["To"].addresses[0].addr_spec
        mails[to] = data
    assert set(mails) == {P1, P2}
    return mails


def row(sessions: sessionmaker[Session], address: str, edition: int = 1) -> Delivery:
    with sessions() as session:
        return session.scalars(
            select(Delivery).where(Delivery.address == address, Delivery.edition_id == edition)
        ).one()


def suppression(sessions: sessionmaker[Session], address: str) -> Suppression | None:
    with sessions() as session:
        return session.get(Suppression, address)


# --- reports as Postfix writes them ----------------------------------------------------------


def postfix_dsn(
    original: bytes | None,
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str | None = None,
    returned: str = "headers",
    original_recipient: str | None = None,
    extra_blocks: tuple[dict[str, str], ...] = (),
) -> bytes:
    """A bounce as Postfix sends it: the notice, the status report, the returned headers."""
    if diagnostic is None:
        diagnostic = (
            f"smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown in "
            "virtual mailbox table"
        )
    report = MIMEMultipart("report", report_type="delivery-status", boundary="7A1B2C.1764255601")
    report["Date"] = "Fri, 27 Nov 2026 16:00:03 +0100 (CET)"
    report["From"] = "MAILER-DAEMON@relay.digest.example (Mail Delivery System)"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["To"] = "bounces@digest.example"
    report["Auto-Submitted"] = "auto-replied"
    report["Message-Id"] = "<20261127150003.7A1B2C@relay.digest.example>"
    report.preamble = "This is a MIME-encapsulated message."

    notice = MIMEText(
        "This is the mail system at host relay.digest.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        f"<{recipient}>: host mx.ouders.example[192.0.2.25] said: {diagnostic}\n",
        "plain",
        "us-ascii",
    )
    notice["Content-Description"] = "Notification"
    report.attach(notice)

    status_part = MIMEBase("message", "delivery-status")
    del status_part["MIME-Version"]
    status_part["Content-Description"] = "Delivery report"
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; relay.digest.example"
    per_message["X-Postfix-Queue-ID"] = "7A1B2C"
    per_message["X-Postfix-Sender"] = "rfc822; bounces@digest.example"
    per_message["Arrival-Date"] = "Fri, 27 Nov 2026 16:00:01 +0100 (CET)"
    block = Message()
    block["Final-Recipient"] = f"rfc822; {recipient}"
    if original_recipient:
        block["Original-Recipient"] = f"rfc822;{original_recipient}"
    block["Action"] = action
    block["Status"] = status
    block["Remote-MTA"] = "dns; mx.ouders.example"
    block["Diagnostic-Code"] = diagnostic
    blocks = [per_message, block]
    for fields in extra_blocks:
        extra = Message()
        for name, value in fields.items():
            extra[name] = value
        blocks.append(extra)
    status_part.set_payload(blocks)
    report.attach(status_part)

    if original is not None and returned == "headers":
        head = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("ascii")
        headers = MIMEText(head + "\n", "rfc822-headers", "us-ascii")
        headers["Content-Description"] = "Undelivered Message Headers"
        report.attach(headers)
    elif original is not None and returned == "message":
        returned_part = MIMEBase("message", "rfc822")
        returned_part.set_payload([email.message_from_bytes(original)])
        returned_part["Content-Description"] = "Undelivered Message"
        report.attach(returned_part)
    return report.as_bytes()


def vacation_reply() -> bytes:
    reply = MIMEText("Ik ben tot 7 december afwezig.", "plain", "utf-8")
    reply["From"] = P1
    reply["To"] = "bounces@digest.example"
    reply["Subject"] = "Afwezig: Nieuwsbrief week 48"
    reply["Auto-Submitted"] = "auto-replied"
    return reply.as_bytes()


def complaint_report() -> bytes:
    """A spam complaint (ARF): a multipart/report, but not about delivery."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report.attach(MIMEText("This is an email abuse report.", "plain"))
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload("Feedback-Type: abuse\nUser-Agent: Example/1.0\nVersion: 1\n")
    report.attach(feedback)
    return report.as_bytes()


def maildir_with(path: Path, *mails: bytes) -> Path:
    box = mailbox.Maildir(path, create=True)
    for mail in mails:
        box.add(mail)
    return path


def read(sessions: sessionmaker[Session], path: Path) -> dict[str, int]:
    summary = read_bounces(sessions, path, at=LATER)
    return {outcome.value: count for outcome, count in summary.counts.items()}


# --- the rules ---------------------------------------------------------------------------------


def test_unknown_user_fails_the_row_and_suppresses_the_address(sessions, sent, tmp_path):
    bounces = maildir_with(tmp_path / "bounces", postfix_dsn(sent[P2], P2, status="5.1.1"))
    assert read(sessions, bounces) == {"suppressed": 1}
    failed = row(sessions, P2)
    assert failed.status is DeliveryStatus.FAILED
    assert failed.last_reply == (
        "5.1.1 bounced: 550 5.1.1 <p2@ouders.example>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    suppressed = suppression(sessions, P2)
    assert suppressed is not None
    assert suppressed.created_at == LATER and "5.1.1" in suppressed.reason
    assert row(sessions, P1).status is DeliveryStatus.SENT  # the other address is untouched
    # read, then marked read as a mail client does
    assert not list((bounces / "new").iterdir())
    assert [p.name.endswith(":2,S") for p in (bounces / "cur").iterdir()] == [True]


def test_the_next_edition_skips_a_suppressed_address(sessions, sent, tmp_path):
    read(sessions, maildir_with(tmp_path / "bounces", postfix_dsn(sent[P2], P2)))
    with sessions() as session, session.begin():
        plan_edition(session, "s1", CUTOFF + timedelta(days=7))
    next_week = row(sessions, P2, edition=2)
    assert (next_week.status, next_week.reason) == (DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED)
    with sessions() as session:
        p2 = session.scalars(
            select(Recipient).where(Recipient.edition_id == 2, Recipient.guardian_id == "p2")
        ).one()
        assert p2.delivery_id == next_week.id


@pytest.mark.parametrize("status", ["5.2.1", "5.1.2", "5.1.10"])
def test_every_no_such_address_code_suppresses(sessions, sent, tmp_path, status):
    read(sessions, maildir_with(tmp_path / "b", postfix_dsn(sent[P2], P2, status=status)))
    assert row(sessions, P2).status is DeliveryStatus.FAILED
    assert suppression(sessions, P2) is not None


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("5.7.1", "smtp; 550 5.7.1 Message rejected as spam by Content Filtering"),
        ("5.2.2", "smtp; 552 5.2.2 Mailbox full"),
        ("5.1.8", "smtp; 553 5.1.8 Sender address domain does not exist"),
        ("5.3.4", "smtp; 552 5.3.4 Message too big for system"),
    ],
)
def test_other_permanent_failures_fail_the_row_only(sessions, sent, tmp_path, status, diagnostic):
    dsn = postfix_dsn(sent[P2], P2, status=status, diagnostic=diagnostic)
    assert read(sessions, maildir_with(tmp_path / "b", dsn)) == {"failed": 1}
    failed = row(sessions, P2)
    assert failed.status is DeliveryStatus.FAILED
    assert failed.last_reply == f"{status} bounced: {diagnostic.removeprefix('smtp; ')}"
    assert suppression(sessions, P2) is None


def test_delayed_and_delivered_reports_change_nothing(sessions, sent, tmp_path):
    delayed = postfix_dsn(
        sent[P2],
        P2,
        action="delayed",
        status="4.4.1",
        diagnostic="X-Postfix; connect to mx.ouders.example[192.0.2.25]:25: Connection timed out",
    )
    delivered = postfix_dsn(
        sent[P1], P1, action="delivered", status="2.0.0", diagnostic="smtp; 250 2.0.0 Ok"
    )
    assert read(sessions, maildir_with(tmp_path / "b", delayed, delivered)) == {"ignored": 2}
    for address in (P1, P2):
        assert row(sessions, address).status is DeliveryStatus.SENT
        assert suppression(sessions, address) is None


def test_a_relay_that_gives_up_expires_the_row(sessions, sent, tmp_path):
    gave_up = postfix_dsn(
        sent[P2],
        P2,
        status="4.4.7",
        diagnostic="X-Postfix; delivery temporarily suspended: connect to mx.ouders.example: "
        "Connection timed out",
    )
    assert read(sessions, maildir_with(tmp_path / "b", gave_up)) == {"expired": 1}
    expired = row(sessions, P2)
    assert expired.status is DeliveryStatus.EXPIRED
    assert expired.last_reply and expired.last_reply.startswith("4.4.7 bounced: delivery")
    assert suppression(sessions, P2) is None


def test_reading_the_same_reports_again_is_harmless(sessions, sent, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "unknown-user.eml").write_bytes(postfix_dsn(sent[P2], P2, status="5.1.1"))
    (folder / "spam.eml").write_bytes(
        postfix_dsn(sent[P1], P1, status="5.7.1", diagnostic="smtp; 554 5.7.1 spam")
    )
    assert read(sessions, folder) == {"suppressed": 1, "failed": 1}
    first = recorded(sessions)
    summary = read_bounces(sessions, folder, at=LATER + timedelta(days=1))
    assert summary.counts == {BounceOutcome.ALREADY_RECORDED: 2} and summary.mails == 2
    assert recorded(sessions) == first
    assert suppression(sessions, P1) is None


def recorded(sessions: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with sessions() as session:
        rows = [(d.address, d.status, d.last_reply) for d in session.scalars(select(Delivery))]
        kept = [(s.address, s.reason, s.created_at) for s in session.scalars(select(Suppression))]
    return sorted(rows) + sorted(kept)


def test_a_row_already_failed_keeps_its_reply(sessions, sent, tmp_path):
    with sessions() as session, session.begin():
        failed = session.scalars(select(Delivery).where(Delivery.address == P2)).one()
        failed.status, failed.last_reply = DeliveryStatus.FAILED, "554 5.7.1 refused at DATA"
    assert read(sessions, maildir_with(tmp_path / "b", postfix_dsn(sent[P2], P2))) == {
        "suppressed": 1  # the row kept its reply; the address is new on the list
    }
    assert row(sessions, P2).last_reply == "554 5.7.1 refused at DATA"
    assert suppression(sessions, P2) is not None


def test_a_maildir_is_read_once_so_a_lifted_suppression_stays_lifted(sessions, sent, tmp_path):
    bounces = maildir_with(tmp_path / "bounces", postfix_dsn(sent[P2], P2))
    read(sessions, bounces)
    with sessions() as session, session.begin():
        remove_suppression(session, P2)
    summary = read_bounces(sessions, bounces, at=LATER)
    assert summary.mails == 0 and summary.counts == {}
    assert suppression(sessions, P2) is None
    # a mail a client moved to cur/ unread is still read
    maildir_with(bounces, postfix_dsn(sent[P2], P2, status="5.2.1"))
    new = next((bounces / "new").iterdir())
    new.rename(bounces / "cur" / f"{new.name}:2,")
    assert read(sessions, bounces) == {"suppressed": 1}


def test_mails_that_are_not_reports_are_counted_and_skipped(sessions, sent, tmp_path):
    bounces = maildir_with(
        tmp_path / "bounces",
        vacation_reply(),
        complaint_report(),
        b"\x00\xff not a mail at all \xfe",
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary, no parts\n",
        postfix_dsn(sent[P2], P2),
    )
    assert read(sessions, bounces) == {"not_a_report": 4, "suppressed": 1}
    assert row(sessions, P1).status is DeliveryStatus.SENT
    assert len(list((bounces / "cur").iterdir())) == 5


def test_reports_that_do_not_name_our_mail_are_unmatched(sessions, sent, tmp_path):
    other_mail = sent[P2].replace(b"Message-ID: <", b"Message-ID: <someone-else.", 1)
    bounces = maildir_with(
        tmp_path / "bounces",
        postfix_dsn(None, P2),  # no returned headers: anyone could have written it
        postfix_dsn(other_mail, P2),  # not our Message-ID
        postfix_dsn(sent[P1], P2),  # our Message-ID, but another address
    )
    assert read(sessions, bounces) == {"unmatched": 3}
    assert row(sessions, P2).status is DeliveryStatus.SENT
    assert suppression(sessions, P2) is None


def test_the_returned_message_and_the_original_recipient_match_too(sessions, sent, tmp_path):
    forwarded = postfix_dsn(
        sent[P2],
        "fatma.y@elders.example",  # where p2's mail was forwarded to
        original_recipient=P2.upper(),
        returned="message",
    )
    assert read(sessions, maildir_with(tmp_path / "b", forwarded)) == {"suppressed": 1}
    assert suppression(sessions, P2) is not None


def test_a_report_on_several_recipients_counts_each(sessions, sent, tmp_path):
    dsn = postfix_dsn(
        sent[P2],
        P2,
        extra_blocks=(
            {
                "Final-Recipient": "rfc822; someone@elders.example",
                "Action": "failed",
                "Status": "5.1.1",
            },
            {"Final-Recipient": "rfc822; other@elders.example", "Action": "delayed"},
        ),
    )
    assert read(sessions, dsn_file(tmp_path, dsn)) == {
        "suppressed": 1,
        "unmatched": 1,
        "ignored": 1,
    }


def dsn_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bounce.eml"
    path.write_bytes(data)
    return path


def test_logs_name_deliveries_never_addresses(sessions, sent, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="digest")
    read(sessions, maildir_with(tmp_path / "b", postfix_dsn(sent[P2], P2), vacation_reply()))
    assert caplog.records, "the bounce is logged"
    delivery_id = str(row(sessions, P2).id)
    assert any(delivery_id in r.getMessage() for r in caplog.records)
    assert not any("@" in r.getMessage() for r in caplog.records)


def test_a_missing_path_is_a_clear_error(sessions, tmp_path):
    from digest.errors import BounceSourceError

    with pytest.raises(BounceSourceError, match="no such file"):
        read_bounces(sessions, tmp_path / "nowhere")


# --- parsing alone -----------------------------------------------------------------------------


def test_parse_reads_each_field_of_a_postfix_report():
    original = b"From: a@digest.example\r\nMessage-ID:\r\n <abc.1@digest.example>\r\n\r\nhi\r\n"
    report = parse_report(
        postfix_dsn(
            original,
            "P2@Ouders.Example",
            status="5.1.1 (bad destination mailbox address)",
            original_recipient="p2@ouders.example",
        )
    )
    assert report is not None
    assert report.message_id == "<abc.1@digest.example>"
    (block,) = report.recipients
    assert block.final_recipient == "p2@ouders.example"
    assert block.original_recipient == "p2@ouders.example"
    assert (block.action, block.status) == ("failed", "5.1.1")
    assert block.diagnostic == (
        "550 5.1.1 (bad destination mailbox address) <P2@Ouders.Example>: Recipient address "
        "rejected: User unknown in virtual mailbox table"
    )


GLOBAL_STATUS = (
    "Reporting-MTA: dns; relay.example\n\n"
    "Final-Recipient: utf-8; jürgen@ouders.example\n"
    "Action: failed\nStatus: 5.1.1\n"
)


def test_parse_reads_a_global_report_for_an_smtputf8_address():
    report = MIMEMultipart("report", report_type="global-delivery-status")
    report.attach(MIMEText("Delivery failed.", "plain"))
    status = MIMEBase("message", "global-delivery-status")
    status.set_payload(GLOBAL_STATUS, "utf-8")  # base64, as the stdlib writes it
    report.attach(status)
    headers = MIMEBase("message", "global-headers")
    headers.set_payload("Message-ID: <x@digest.example>\nSubject: Nieuwsbrief\n", "utf-8")
    report.attach(headers)
    parsed = parse_report(report.as_bytes())
    assert parsed is not None and parsed.message_id == "<x@digest.example>"
    assert [b.final_recipient for b in parsed.recipients] == ["jürgen@ouders.example"]


def test_parse_reads_a_global_report_in_8bit():
    data = (
        "Content-Type: multipart/report; report-type=global-delivery-status; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nDelivery failed.\n"
        "--b\nContent-Type: message/global-delivery-status\nContent-Transfer-Encoding: 8bit\n\n"
        f"{GLOBAL_STATUS}\n"
        "--b\nContent-Type: message/global-headers\n\nMessage-ID: <y@digest.example>\n\n"
        "--b--\n"
    ).encode()
    parsed = parse_report(data)
    assert parsed is not None and parsed.message_id == "<y@digest.example>"
    assert [(b.final_recipient, b.status) for b in parsed.recipients] == [
        ("jürgen@ouders.example", "5.1.1")
    ]


def test_only_no_such_address_codes_suppress():
    assert all(suppresses_address(c) for c in ("5.1.1", "5.1.2", "5.1.6", "5.1.10", "5.2.1"))
    assert not any(
        suppresses_address(c) for c in ("5.1.7", "5.1.8", "5.2.2", "5.7.1", "4.1.1", None)
    )


def test_summary_counts_by_outcome():
    summary = BounceSummary()
    summary.add(BounceOutcome.FAILED)
    summary.add(BounceOutcome.FAILED)
    assert summary.counts == {BounceOutcome.FAILED: 2}


# --- the command -------------------------------------------------------------------------------


def test_digest_bounces_prints_the_counts(sessions, sent, tmp_path, db_url):
    bounces = maildir_with(
        tmp_path / "bounces",
        postfix_dsn(sent[P2], P2),
        postfix_dsn(sent[P1], P1, action="delayed", status="4.4.1"),
        vacation_reply(),
    )
    env = {"DIGEST_DATABASE_URL": db_url}
    result = run_digest(tmp_path, "bounces", str(bounces), "--at", "2026-11-27T19:00", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"read 3 mails from {bounces}"
    counts = {line.rsplit(None, 1)[0].strip(): int(line.split()[-1]) for line in lines[1:]}
    assert counts == {
        "failed, address suppressed": 1,
        "failed": 0,
        "ignored (delayed, delivered)": 1,
        "unmatched": 0,
        "not a report": 1,
    }
    assert "@" not in result.stderr
    listing = run_digest(tmp_path, "suppress", "--list", env=env)
    assert P2 in listing.stdout and "2026-11-27 18:00 UTC" in listing.stdout
    again = run_digest(tmp_path, "bounces", str(bounces), env=env)
    assert again.stdout.splitlines()[0] == f"read 0 mails from {bounces}"


def test_digest_bounces_refuses_a_missing_path(tmp_path):
    result = run_digest(tmp_path, "bounces", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_a_bounce_of_a_later_part_finds_the_row_of_part_one(sessions, sent, tmp_path):
    # A week too large for one mail goes as parts; the row keeps part 1's Message-ID and
    # part N's is derived from it (render_parts), so a bounce of part 2 still counts.
    first = row(sessions, P2).message_id
    assert first is not None
    returned = sent[P2].replace(first.encode(), part_message_id(first, 2).encode())
    bounces = maildir_with(tmp_path / "bounces", postfix_dsn(returned, P2))
    assert read(sessions, bounces) == {"suppressed": 1}
    assert row(sessions, P2).status is DeliveryStatus.FAILED


def test_a_row_queued_before_its_address_was_suppressed_is_not_sent(sessions, sent, tmp_path):
    # The bounce of one mail arrives while the next (a per-post mail, another edition) waits.
    read(sessions, maildir_with(tmp_path / "bounces", postfix_dsn(sent[P2], P2)))
    with sessions() as session, session.begin():
        session.add(
            Delivery(
                kind=DeliveryKind.POST,
                school_id="s1",
                post_id="m2",
                address=P2,
                locale="nl",
                post_ids=["m2"],
                status=DeliveryStatus.QUEUED,
                attempts=0,
            )
        )

    async def send() -> None:
        transport = open_transport(f"maildir://{tmp_path / 'later'}")
        try:
            await Deliverer(sessions, transport, SETTINGS).run(LATER)
        finally:
            await transport.close()

    on_event_loop(send())
    with sessions() as session:
        waiting = session.scalars(select(Delivery).where(Delivery.post_id == "m2")).one()
    assert (waiting.status, waiting.reason) == (DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED)
    later = tmp_path / "later" / "new"
    assert not later.exists() or not list(later.iterdir())
