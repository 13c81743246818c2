"""A real SMTP server for tests: aiosmtpd in a thread that records what it accepts.

Use the ``smtp_server`` fixture from any test file::

    from smtp_server import smtp_server  # noqa: F401

    def test_something(smtp_server: SmtpServer) -> None:
        url = smtp_server.url()            # smtp://127.0.0.1:<port>?tls=none
        ...
        assert smtp_server.messages[0].rcpt_tos == ("a@example.org",)

Faults are injected into the server, never into the client, by setting attributes at any time
(they apply to the commands that follow): ``rcpt_replies``, ``mail_reply``, ``data_reply``,
``auth``, ``close_after``, ``drop_after_data``, ``delays``, ``starttls``; and
``disconnect_all()`` closes every open connection at once (as a server's idle timeout would).
TLS tests take the ``server_tls`` fixture (a self-signed certificate made with the openssl
command line; the test is skipped without it).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "SmtpServer", "server_tls", "smtp_server"]


@dataclass(frozen=True)
class Received:
    """One message the server accepted (answered 250 at the end of DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # as received, dot-unstuffed, CRLF line endings
    connection: int  # 1-based number of the connection that carried it
    tls: bool


class _FaultySMTP(SMTP):
    """aiosmtpd's protocol, able to close the connection after a reply or instead of it."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.connection = 0  # numbered at the first EHLO/HELO, so probes are not counted
        self.close_after_reply = False
        self.drop_next_reply = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._live.discard(self)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        if self.drop_next_reply:
            self.drop_next_reply = False
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)
        if self.close_after_reply and self.transport is not None:
            self.transport.close()

    @property
    def tls(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        )


class _Handler:
    """aiosmtpd hooks: record every command, apply the owner's faults, keep accepted mail."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def _enter(self, server: _FaultySMTP, command: str) -> None:
        owner = self.owner
        with owner._lock:
            if not server.connection:
                owner._connections += 1
                server.connection = owner._connections
            owner.commands.append((server.connection, command))
        delay = owner.delays.get(command, 0.0)
        if delay:
            with owner._lock:
                owner._waiting[command] = waiting = owner._waiting.get(command, 0) + 1
                owner.peak[command] = max(owner.peak.get(command, 0), waiting)
            try:
                await asyncio.sleep(delay)
            finally:
                with owner._lock:
                    owner._waiting[command] -= 1

    async def handle_EHLO(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await self._enter(server, "EHLO")
        session.host_name = hostname  # the 5-argument hook must do what the default does
        return responses

    async def handle_HELO(
        self, server: _FaultySMTP, session: Session, envelope: Envelope, hostname: str
    ) -> Any:
        await self._enter(server, "HELO")
        return MISSING

    async def handle_AUTH(
        self, server: _FaultySMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        await self._enter(server, "AUTH")
        return MISSING

    async def handle_MAIL(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> Any:
        await self._enter(server, "MAIL")
        owner = self.owner
        if owner.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        close_after = owner.close_after
        if close_after is not None and len(owner.messages) >= close_after[0]:
            owner.close_after = None
            server.close_after_reply = True
            return close_after[1]
        return owner.mail_reply or MISSING

    async def handle_RCPT(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> Any:
        await self._enter(server, "RCPT")
        replies = {k.lower(): v for k, v in self.owner.rcpt_replies.items()}
        return replies.get(address.lower(), MISSING)

    async def handle_DATA(self, server: _FaultySMTP, session: Session, envelope: Envelope) -> Any:
        await self._enter(server, "DATA")
        owner = self.owner
        with owner._lock:
            if owner.drop_after_data > 0:
                owner.drop_after_data -= 1
                server.drop_next_reply = True
                return "250 never sent"
        if owner.data_reply is not None:
            return owner.data_reply
        content = envelope.original_content or b""
        with owner._lock:
            owner.messages.append(
                Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=bytes(content),
                    connection=server.connection,
                    tls=server.tls,
                )
            )
            number = len(owner.messages)
        return f"250 2.0.0 OK queued as Q{number}"

    async def handle_RSET(self, server: _FaultySMTP, session: Session, envelope: Envelope) -> Any:
        await self._enter(server, "RSET")
        return MISSING

    async def handle_QUIT(self, server: _FaultySMTP, session: Session, envelope: Envelope) -> Any:
        await self._enter(server, "QUIT")
        return MISSING


class _Controller(Controller):
    def __init__(self, owner: SmtpServer, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(
            _Handler(owner),
            hostname="127.0.0.1",
            port=0,
            ssl_context=ssl_context,
            server_hostname="smtp.test",  # skips a getfqdn() lookup per connection
        )
        self.owner = owner

    def factory(self) -> SMTP:
        # Called per connection, so fault settings like ``starttls`` apply to new connections.
        return self.owner._make_protocol(self.handler, self.loop)

    def _trigger_server(self) -> None:
        # With port 0 the OS picks the port; the probe connection must use the real one.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpServer:
    """A recording SMTP server on 127.0.0.1 with a free port, running in its own thread."""

    host = "127.0.0.1"

    def __init__(self, *, implicit_tls: ssl.SSLContext | None = None) -> None:
        self.implicit_tls = implicit_tls
        # - faults -
        self.rcpt_replies: dict[str, str] = {}  # address -> reply to its RCPT TO
        self.mail_reply: str | None = None  # reply to every MAIL FROM
        self.data_reply: str | None = None  # reply at the end of DATA (message not kept)
        # (user, password): AUTH is offered and required; any other login gets 535 5.7.8.
        self.auth: tuple[str, str] | None = None
        # (n, reply): once n messages were accepted, answer the next MAIL FROM with the
        # reply and close the connection (once), e.g. (0, "421 4.7.0 slow down").
        self.close_after: tuple[int, str] | None = None
        self.drop_after_data = 0  # close instead of answering the end of DATA, this many times
        self.delays: dict[str, float] = {}  # command -> seconds to wait before answering it
        self.starttls: ssl.SSLContext | None = None  # offer STARTTLS with this context
        self.size_limit = 33554432  # advertised as SIZE; a larger MAIL FROM SIZE= gets 552
        # - records -
        self.messages: list[Received] = []
        self.commands: list[tuple[int, str]] = []  # (connection number, command)
        # command -> the most of them waiting on their delay at one moment (delayed ones only)
        self.peak: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._connections = 0
        self._lock = threading.Lock()
        self._live: set[_FaultySMTP] = set()
        self._controller = _Controller(self, implicit_tls)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def connections(self) -> int:
        """How many client connections said EHLO or HELO."""
        return self._connections

    def commands_named(self, name: str) -> list[int]:
        """The connection numbers of every ``name`` command received, in order."""
        return [conn for conn, command in self.commands if command == name]

    def url(self, *, tls: str = "none", userinfo: str = "", **params: str) -> str:
        """An smtp:// URL for this server; ``userinfo`` is the (already quoted) user:pass."""
        at = f"{userinfo}@" if userinfo else ""
        query = "&".join([f"tls={tls}", *(f"{k}={v}" for k, v in params.items())])
        return f"smtp://{at}{self.host}:{self.port}?{query}"

    def disconnect_all(self) -> None:
        """Close every open connection from the server side, as an idle timeout does."""
        done = threading.Event()
        closing: list[_FaultySMTP] = []

        def close_all() -> None:
            closing.extend(self._live)
            for protocol in closing:
                if protocol.transport is not None:
                    protocol.transport.close()
            done.set()

        self._controller.loop.call_soon_threadsafe(close_all)
        done.wait(5)
        # transport.close() finishes on a later turn of the server's loop; wait for it, so
        # the sockets are really closed when this returns.
        until = time.monotonic() + 5
        while any(p in self._live for p in closing) and time.monotonic() < until:
            time.sleep(0.005)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_protocol(self, handler: _Handler, loop: asyncio.AbstractEventLoop) -> _FaultySMTP:
        return _FaultySMTP(
            self,
            handler,
            loop=loop,
            hostname="smtp.test",
            enable_SMTPUTF8=True,
            tls_context=self.starttls,
            data_size_limit=self.size_limit,
            # AUTH is advertised on plain connections only when a test asks for it.
            auth_require_tls=self.auth is None,
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A started recording SMTP server without TLS; stopped after the test."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
