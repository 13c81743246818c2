"""The transports against a real Maildir and a real SMTP server with faults injected into it."""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import on_event_loop
from hypothesis import given
from hypothesis import strategies as st
from smtp_server import SmtpServer, server_tls, smtp_server

from digest.errors import DeliveryFailed, TransportError
from digest.transports import (
    MaildirTransport,
    NullTransport,
    SendResult,
    SmtpTransport,
    Transport,
    enhanced_code,
    open_transport,
    wire_form,
)

# pytest finds fixtures among the module's names; naming them here also keeps linters from
# calling the import unused (F401) and each test's parameter a redefinition of it (F811).
FIXTURES = (smtp_server, server_tls)
# Every test here once on uvloop (the default) and once on asyncio's own loop.
pytestmark = pytest.mark.usefixtures("each_event_loop")
T = TypeVar("T")
SENDER = "nieuwsbrief@schakel.example"
PARENT = "f.yilmaz@ouders.example"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return on_event_loop(coro)


def build(subject: str = "Weekbrief groep 5", to: str = PARENT) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"De Schakel <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@schakel.example>"
    # A line starting with a dot and non-ASCII text check transparency and encoding.
    msg.set_content(".Excursie naar het bos\nWoensdag — neem laarzen mee.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def with_transport(url: str, body: Callable[[Transport], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        transport = open_transport(url, **options)
        try:
            return await body(transport)
        finally:
            await transport.close()

    return run(main())


def send_one(url: str, message: bytes, recipients: list[str] | None = None, **options: Any) -> Any:
    async def body(transport: Transport) -> SendResult:
        return await transport.send(message, sender=SENDER, recipients=recipients or [PARENT])

    options.setdefault("timeout", 1.0)
    options.setdefault("deadline", 3.0)
    return with_transport(url, body, **options)


def failure(url: str, recipients: list[str] | None = None, **options: Any) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        send_one(url, build(), recipients, **options)
    return caught.value


# --- URLs ---------------------------------------------------------------------------------


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(TransportError) as caught:
        open_transport("smpt://mail.example:587")
    assert str(caught.value) == 'unknown scheme "smpt"'


@pytest.mark.parametrize(
    "url",
    [
        "smtp://mail.example?tls=ssl",
        "smtp://mail.example?tsl=none",  # a typo must not pass silently
        "smtp://mail.example?verify=maybe",
        "smtp://:secret@mail.example",
        "smtp://mail.example:notaport",
        "smtp:///no-host",
        "maildir://mail.example/var/mail",
        "maildir://",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(TransportError):
        open_transport(url)


@pytest.mark.parametrize(
    ("query", "tls", "port"),
    [("", "starttls", 587), ("?tls=starttls", "starttls", 587), ("?tls=tls", "tls", 465),
     ("?tls=none", "none", 25)],
)  # fmt: skip
def test_smtp_url_defaults(query: str, tls: str, port: int) -> None:
    transport = open_transport(f"smtp://mail.example{query}")
    assert isinstance(transport, SmtpTransport)
    assert (transport.config.tls, transport.config.port) == (tls, port)
    assert transport.config.verify is True
    assert transport.config.username is None


def test_smtp_url_credentials_are_decoded_and_never_shown() -> None:
    transport = open_transport("smtp://school%40board.example:p%40ss%3Aw%2Frd@mail.example:2525")
    assert isinstance(transport, SmtpTransport)
    assert transport.config.username == "school@board.example"
    assert transport.config.password == "p@ss:w/rd"
    assert transport.config.port == 2525
    assert "p@ss" not in repr(transport) and "p%40ss" not in repr(transport)


def test_every_transport_meets_the_protocol(tmp_path: Path) -> None:
    for url, name in [
        (f"maildir://{tmp_path}/m", "maildir"),
        ("null://", "null"),
        ("smtp://mail.example", "smtp"),
    ]:
        transport = open_transport(url)
        assert isinstance(transport, Transport)
        assert transport.name == name


def test_enhanced_code() -> None:
    assert enhanced_code("550 5.1.1 no such user") == "5.1.1"
    assert enhanced_code("421 4.7.0 slow down") == "4.7.0"
    assert enhanced_code("250 OK") is None
    assert enhanced_code("554 Transaction failed 5.7.1") is None


# --- maildir and null ---------------------------------------------------------------------


def read_maildir(path: Path) -> list[email.message.Message]:
    box = mailbox.Maildir(path, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(key)) for key in box.iterkeys()]


def test_maildir_absolute_url_parses_back(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    message = build()
    result = send_one(f"maildir://{folder}", message)

    assert result.reply.startswith("delivered to maildir ")
    key = result.reply.removeprefix("delivered to maildir ")
    assert (folder / "new" / key).is_file()
    assert b"\r\n" not in (folder / "new" / key).read_bytes()  # local line endings
    [parsed] = read_maildir(folder)
    assert parsed["Subject"] == "Weekbrief groep 5"
    assert parsed["To"] == PARENT
    body = parsed.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "Woensdag — neem laarzen mee." in body.decode()


def test_maildir_relative_url_is_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    send_one("maildir://./outbox/school", build("Eerste"))
    send_one("maildir://./outbox/school", build("Tweede"))
    subjects = sorted(m["Subject"] for m in read_maildir(tmp_path / "outbox" / "school"))
    assert subjects == ["Eerste", "Tweede"]


def test_maildir_concurrent_sends_each_get_their_own_file(tmp_path: Path) -> None:
    async def body(transport: Transport) -> list[SendResult]:
        sends = [
            transport.send(build(f"Bericht {i}"), sender=SENDER, recipients=[PARENT])
            for i in range(30)
        ]
        return await asyncio.gather(*sends)

    results = with_transport(f"maildir://{tmp_path}/box", body)
    assert len({r.reply for r in results}) == 30
    subjects = {m["Subject"] for m in read_maildir(tmp_path / "box")}
    assert subjects == {f"Bericht {i}" for i in range(30)}


def test_null_counts_and_discards() -> None:
    async def body(transport: Transport) -> int:
        for _ in range(3):
            await transport.send(build(), sender=SENDER, recipients=[PARENT])
        assert isinstance(transport, NullTransport)
        return transport.sent

    assert with_transport("null://", body) == 3


def test_maildir_transport_type(tmp_path: Path) -> None:
    assert isinstance(open_transport(f"maildir://{tmp_path}/x"), MaildirTransport)


# --- SMTP: delivery and the pool ----------------------------------------------------------


def test_smtp_message_is_received_intact(smtp_server: SmtpServer) -> None:
    message = build()
    result = send_one(smtp_server.url(), message)

    assert result.reply == "250 2.0.0 OK queued as Q1"
    [received] = smtp_server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == (PARENT,)
    assert received.content == message
    assert received.tls is False


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\xc3\xa9"]), max_size=40))
def test_wire_form_is_the_message_with_every_line_ending_crlf(pieces: list[bytes]) -> None:
    message = b"".join(pieces)
    on_the_wire = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    assert wire_form(message) == (len(on_the_wire), on_the_wire == message)


@pytest.mark.parametrize(
    "message",
    [
        b"Subject: x\r\n\r\n.\r\n..\r\nend\r\n",  # leading dots, CRLF: sent as it is
        b".first line is a dot\r\n\r\nbody",  # starts with a dot, no final CRLF
        b"Subject: x\n\n.bare LF\nand a bare CR\rend\n",  # rewritten by aiosmtplib
    ],
)
def test_smtp_data_arrives_as_written_with_crlf_line_ends(
    smtp_server: SmtpServer, message: bytes
) -> None:
    send_one(smtp_server.url(), message)
    [received] = smtp_server.messages
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"  # DATA's last line needs its end; the dots come back single
    assert received.content == expected


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_a_message_over_the_servers_size_is_refused_before_upload(
    smtp_server: SmtpServer, line_end: bytes
) -> None:
    message = build().replace(b"\r\n", line_end)
    # The limit sits between the bytes we hold and the bytes DATA sends: a bare-LF message
    # only passes if its SIZE was counted in the LF form.
    smtp_server.size_limit = len(build()) - 1
    with pytest.raises(DeliveryFailed) as caught:
        send_one(smtp_server.url(), message)
    error = caught.value
    assert error.smtp_code == 552
    assert error.blame == "recipient"
    assert smtp_server.commands_named("DATA") == []
    assert smtp_server.messages == []


def test_a_message_within_the_servers_size_is_sent(smtp_server: SmtpServer) -> None:
    message = build()
    # Exactly what DATA carries: aiosmtpd counts a dot-stuffed line's extra dot.
    smtp_server.size_limit = len(message) + message.count(b"\r\n.")
    assert send_one(smtp_server.url(), message).reply.startswith("250")
    assert [m.content for m in smtp_server.messages] == [message]


def test_smtp_several_recipients_share_one_envelope(smtp_server: SmtpServer) -> None:
    send_one(smtp_server.url(), build(), ["a@ouders.example", "b@ouders.example"])
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("a@ouders.example", "b@ouders.example")


def test_smtp_sequential_sends_reuse_one_connection(smtp_server: SmtpServer) -> None:
    async def body(transport: Transport) -> None:
        for i in range(5):
            await transport.send(build(f"Bericht {i}"), sender=SENDER, recipients=[PARENT])

    with_transport(smtp_server.url(), body, timeout=1.0)
    assert len(smtp_server.messages) == 5
    assert smtp_server.connections == 1
    assert smtp_server.commands_named("RSET") == []  # a completed DATA resets the envelope
    assert smtp_server.commands_named("QUIT") == [1]  # said by close()


def test_smtp_pool_bounds_concurrent_connections(smtp_server: SmtpServer) -> None:
    smtp_server.delays["DATA"] = 0.05  # keeps sends overlapping

    async def body(transport: Transport) -> None:
        await asyncio.gather(
            *(
                transport.send(build(f"Bericht {i}"), sender=SENDER, recipients=[PARENT])
                for i in range(10)
            )
        )

    with_transport(smtp_server.url(), body, pool_size=2, timeout=1.0)
    assert len(smtp_server.messages) == 10
    assert smtp_server.connections == 2
    assert {m.connection for m in smtp_server.messages} == {1, 2}


def test_smtp_reconnects_when_the_server_closed_an_idle_connection(
    smtp_server: SmtpServer,
) -> None:
    async def body(transport: Transport) -> None:
        await transport.send(build("Een"), sender=SENDER, recipients=[PARENT])
        smtp_server.disconnect_all()
        # Straight on, before this loop has seen the close: MAIL meets a dead connection,
        # which is replaced (nothing was accepted on it, so no duplicate is possible).
        await transport.send(build("Twee"), sender=SENDER, recipients=[PARENT])
        smtp_server.disconnect_all()
        await asyncio.sleep(0.05)  # now the pool notices the close before reusing
        await transport.send(build("Drie"), sender=SENDER, recipients=[PARENT])

    with_transport(smtp_server.url(), body, timeout=1.0)
    assert [m.connection for m in smtp_server.messages] == [1, 2, 3]


def test_smtp_auth_with_decoded_credentials(smtp_server: SmtpServer) -> None:
    smtp_server.auth = ("school@board.example", "p@ss:w/rd")
    send_one(smtp_server.url(userinfo="school%40board.example:p%40ss%3Aw%2Frd"), build())
    assert len(smtp_server.messages) == 1


def test_smtp_send_after_close_is_refused(smtp_server: SmtpServer) -> None:
    async def main() -> None:
        transport = open_transport(smtp_server.url())
        await transport.close()
        with pytest.raises(TransportError):
            await transport.send(build(), sender=SENDER, recipients=[PARENT])

    run(main())
    assert smtp_server.messages == []


# --- SMTP: failures and who is to blame ---------------------------------------------------


def test_451_at_rcpt_is_transient_and_the_connection_stays_usable(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.rcpt_replies[PARENT] = "451 4.3.0 try later"

    async def body(transport: Transport) -> DeliveryFailed:
        with pytest.raises(DeliveryFailed) as caught:
            await transport.send(build(), sender=SENDER, recipients=[PARENT])
        await transport.send(build(), sender=SENDER, recipients=["other@ouders.example"])
        return caught.value

    error = with_transport(smtp_server.url(), body, timeout=1.0)
    assert (error.blame, error.smtp_code, error.recipient) == ("transient", 451, PARENT)
    assert error.reply == "451 4.3.0 try later"
    assert not error.permanent
    assert [m.rcpt_tos for m in smtp_server.messages] == [("other@ouders.example",)]
    assert smtp_server.connections == 1
    assert smtp_server.commands_named("RSET") == [1]


def test_550_511_blames_the_recipient(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies[PARENT] = "550 5.1.1 no such user"
    error = failure(smtp_server.url())
    assert (error.blame, error.smtp_code, error.recipient) == ("recipient", 550, PARENT)
    assert error.reply == "550 5.1.1 no such user"
    assert error.permanent
    assert smtp_server.messages == []


def test_one_refused_recipient_stops_the_whole_envelope(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies["gone@ouders.example"] = "550 5.1.1 no such user"
    error = failure(smtp_server.url(), [PARENT, "gone@ouders.example"])
    assert (error.blame, error.recipient) == ("recipient", "gone@ouders.example")
    assert smtp_server.messages == []
    assert smtp_server.commands_named("DATA") == []


def test_policy_refusal_of_every_recipient_blames_the_sender(smtp_server: SmtpServer) -> None:
    for address in ("a@ouders.example", "b@ouders.example"):
        smtp_server.rcpt_replies[address] = "550 5.7.1 not authorised to send here"
    error = failure(smtp_server.url(), ["a@ouders.example", "b@ouders.example"])
    assert error.blame == "sender"


def test_policy_refusal_of_one_recipient_blames_that_recipient(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies[PARENT] = "550 5.7.1 recipient does not accept mail from you"
    assert failure(smtp_server.url()).blame == "recipient"


def test_relay_denied_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies[PARENT] = "554 5.7.1 <f.yilmaz@ouders.example>: Relay access denied"
    error = failure(smtp_server.url())
    assert (error.blame, error.smtp_code) == ("sender", 554)


def test_535_at_auth_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.auth = ("school", "right")
    error = failure(smtp_server.url(userinfo="school:wrong"))
    assert (error.blame, error.smtp_code) == ("sender", 535)
    assert error.reply.startswith("535 5.7.8")
    assert smtp_server.messages == []
    assert smtp_server.commands_named("MAIL") == []


def test_530_without_login_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.auth = ("school", "right")
    error = failure(smtp_server.url())
    assert (error.blame, error.smtp_code) == ("sender", 530)


def test_57_at_mail_from_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.mail_reply = "550 5.7.1 sender address rejected"
    error = failure(smtp_server.url())
    assert (error.blame, error.smtp_code) == ("sender", 550)


@pytest.mark.parametrize(
    ("reply", "blame"),
    [
        ("550 5.7.26 unauthenticated mail is prohibited by DMARC", "sender"),
        ("554 5.6.0 message content rejected", "recipient"),
        ("552 5.3.4 message too big", "recipient"),
        ("452 4.3.1 insufficient system storage", "transient"),
    ],
)
def test_replies_at_the_end_of_data(smtp_server: SmtpServer, reply: str, blame: str) -> None:
    smtp_server.data_reply = reply
    error = failure(smtp_server.url())
    assert error.blame == blame
    assert error.reply == reply
    assert error.smtp_code == int(reply[:3])


def test_421_47_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.close_after = (0, "421 4.7.0 too many messages, slow down")
    error = failure(smtp_server.url())
    assert (error.blame, error.smtp_code) == ("sender", 421)
    assert error.reply == "421 4.7.0 too many messages, slow down"
    assert smtp_server.messages == []


def test_421_47_at_rcpt_blames_the_sender(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies["a@ouders.example"] = "421 4.7.0 rate limit exceeded"
    error = failure(smtp_server.url(), ["a@ouders.example", "b@ouders.example"])
    assert (error.blame, error.smtp_code, error.recipient) == ("sender", 421, "a@ouders.example")
    assert smtp_server.commands_named("RCPT") == [1]  # no second RCPT on a closing session


def test_after_a_421_the_pool_reconnects(smtp_server: SmtpServer) -> None:
    smtp_server.close_after = (1, "421 4.3.2 service shutting down")

    async def body(transport: Transport) -> DeliveryFailed:
        await transport.send(build("Een"), sender=SENDER, recipients=[PARENT])
        with pytest.raises(DeliveryFailed) as caught:
            await transport.send(build("Twee"), sender=SENDER, recipients=[PARENT])
        await transport.send(build("Drie"), sender=SENDER, recipients=[PARENT])
        return caught.value

    error = with_transport(smtp_server.url(), body, timeout=1.0)
    assert (error.blame, error.smtp_code) == ("transient", 421)
    assert [m.connection for m in smtp_server.messages] == [1, 2]
    assert smtp_server.connections == 2


def test_dropped_connection_after_data_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.drop_after_data = 1

    async def body(transport: Transport) -> DeliveryFailed:
        with pytest.raises(DeliveryFailed) as caught:
            await transport.send(build("Een"), sender=SENDER, recipients=[PARENT])
        await transport.send(build("Twee"), sender=SENDER, recipients=[PARENT])
        return caught.value

    error = with_transport(smtp_server.url(), body, timeout=1.0)
    assert error.blame == "transient"
    assert error.smtp_code is None
    assert "may have been accepted" in error.reply
    assert [m.connection for m in smtp_server.messages] == [2]


def test_slow_server_beyond_the_deadline_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.delays["DATA"] = 3.0
    started = time.monotonic()
    error = failure(smtp_server.url(), timeout=5.0, deadline=0.5)
    elapsed = time.monotonic() - started
    assert error.blame == "transient"
    assert "deadline" in error.reply
    assert 0.4 < elapsed < 1.5


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_a_silent_reply_beyond_the_socket_timeout_is_transient(
    smtp_server: SmtpServer, command: str
) -> None:
    smtp_server.delays[command] = 3.0  # DATA: the reply to the end of the message
    started = time.monotonic()
    error = failure(smtp_server.url(), timeout=0.3, deadline=5.0)
    assert error.blame == "transient"
    assert f"did not answer {command} within 0.3 s" in error.reply
    assert time.monotonic() - started < 1.5


def test_refused_connection_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = failure(f"smtp://127.0.0.1:{port}?tls=none")
    assert error.blame == "transient"
    assert error.smtp_code is None


@pytest.mark.parametrize("address", ["not an address", "x@ouders.example\r\nRCPT TO:<e@x>"])
def test_a_malformed_recipient_is_refused_before_the_server(
    smtp_server: SmtpServer, address: str
) -> None:
    error = failure(smtp_server.url(), [address])
    assert (error.blame, error.recipient) == ("recipient", address)
    assert smtp_server.commands_named("MAIL") == []


def test_a_malformed_sender_stops_the_run(tmp_path: Path) -> None:
    async def body(transport: Transport) -> None:
        await transport.send(build(), sender="nieuwsbrief", recipients=[PARENT])

    with pytest.raises(TransportError, match="sender"):
        with_transport(f"maildir://{tmp_path}/box", body)


def test_an_internationalised_address_uses_smtputf8(smtp_server: SmtpServer) -> None:
    send_one(smtp_server.url(), build(), ["jürgen@ouders.example"])
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("jürgen@ouders.example",)


# --- SMTP: TLS ----------------------------------------------------------------------------


def test_starttls_required_but_not_offered_sends_nothing(smtp_server: SmtpServer) -> None:
    with pytest.raises(TransportError, match="does not offer STARTTLS"):
        send_one(smtp_server.url(tls="starttls"), build())
    assert smtp_server.messages == []
    assert [command for _, command in smtp_server.commands] == ["EHLO"]


def test_starttls_offered_is_used(smtp_server: SmtpServer, server_tls: ssl.SSLContext) -> None:
    smtp_server.starttls = server_tls
    send_one(smtp_server.url(tls="starttls", verify="false"), build())
    [received] = smtp_server.messages
    assert received.tls is True


def test_starttls_with_an_unverifiable_certificate_sends_nothing(
    smtp_server: SmtpServer, server_tls: ssl.SSLContext
) -> None:
    smtp_server.starttls = server_tls
    with pytest.raises(TransportError, match="does not verify"):
        send_one(smtp_server.url(tls="starttls"), build())
    assert smtp_server.messages == []
    assert smtp_server.commands_named("MAIL") == []


def test_implicit_tls(server_tls: ssl.SSLContext) -> None:
    with SmtpServer(implicit_tls=server_tls) as server:
        send_one(server.url(tls="tls", verify="false"), build())
        [received] = server.messages
    assert received.tls is True


def test_implicit_tls_against_a_plain_port_is_a_transport_error(
    smtp_server: SmtpServer,
) -> None:
    with pytest.raises(TransportError, match="TLS"):
        send_one(smtp_server.url(tls="tls", verify="false"), build())
    assert smtp_server.messages == []
