"""How a built message leaves the service: SMTP, a local Maildir, or nowhere.

``open_transport(url)`` picks the transport by the URL's scheme:

``maildir:///abs/path`` or ``maildir://./relative/path``
    One file per message in a standard Maildir (created if missing), readable by every mail
    client. A relative path is resolved against the current directory when the transport opens.

``null://``
    Accepts and discards every message; ``sent`` counts them.

``smtp://user:pass@host:port?tls=starttls|tls|none&verify=true|false``
    aiosmtplib with a bounded pool of up to ``pool_size`` reused connections; concurrent sends
    use separate connections. ``user``/``pass`` are optional and percent-decoded. ``tls``:

    - ``starttls`` (default, port 587): strict. A server that offers no STARTTLS, or refuses
      it with a 5xx, raises TransportError before any mail command is sent; we never fall
      back to plain text.
    - ``tls`` (port 465): implicit TLS from the first byte.
    - ``none`` (port 25): plain text, for a trusted local relay only (credentials, if given,
      travel in clear).

    ``verify=false`` turns off certificate and host-name verification: for tests and local
    development against a self-signed relay, never for production. Unknown parameters are an
    error, so a typo cannot silently change the security of the connection.

    ``timeout`` bounds each socket operation; ``deadline`` bounds one message from taking a
    connection (reused or new) to the server's final reply. Waiting for a free pool slot is not
    counted, so a caller may queue more sends than ``pool_size`` without them expiring unsent.

    Pooled connections are reused across messages (RSET only after a failed transaction) and
    replaced when closed by the server, after a 421, a timeout or a lost connection, after
    60 s idle or 100 messages. A pooled connection found dead at MAIL FROM, before the server
    accepted anything, is retried once on a fresh connection; every other failure is raised.

Failures of one message raise DeliveryFailed with the server's reply (code and text) and a
``blame`` that tells the caller what to do; failures that stop the whole run (a bad URL, the
TLS policy, a certificate that does not verify, credentials the server cannot accept at all)
raise TransportError. The classification, by stage of the SMTP dialogue:

=======================  ==================================================  ============
stage                    reply                                               blame
=======================  ==================================================  ============
any                      421 with enhanced code 4.7.x (rate limit, policy)   sender
any                      any other 4xx, incl. 421 (connection discarded)     transient
any                      timeout, dropped connection, refused connection     transient
any                      530 (authentication required)                       sender
greeting, EHLO           5xx (our host or IP is refused)                     sender
STARTTLS                 5xx, not offered, certificate fails to verify       TransportError
AUTH                     5xx (535 5.7.8 bad credentials, 534, 538 ...)       sender
AUTH                     server offers no AUTH or no usable mechanism        TransportError
MAIL FROM                552 or x.3.4 (message too large for the server)     recipient
MAIL FROM                any other 5xx (5.7.x policy, 5.1.7/5.1.8 ...)       sender
RCPT TO                  5xx naming relaying ("Relay access denied")         sender
RCPT TO                  5.7.x refused for every one of several recipients   sender
RCPT TO                  any other 5xx (5.1.x, 5.2.x, 5.7.x for one alone)   recipient
DATA                     5.7.x (DMARC, SPF, spam policy: about us)           sender
DATA                     any other 5xx (552 too large, 554 content ...)      recipient
=======================  ==================================================  ============

``recipient`` means "permanent for this message to this address"; the caller decides
whether the address itself is suppressed (DESIGN: only for 5.1.x and 5.2.1), for which
``enhanced_code()`` reads the enhanced status code out of a reply. The relaying rule exists
because a relay that refuses to relay refuses every address: blaming each recipient would
suppress the whole school. A message to several recipients is all or nothing: if any
recipient is refused the envelope is reset, nothing is sent, and the most severe refusal is
raised (sender, then recipient, then transient) naming that recipient.

A dropped connection or a timeout after the message data was sent may mean the server
accepted it anyway; SMTP gives no way to know, so it is reported transient and may repeat.

Every transport refuses an envelope address that is not a bare ``local@domain`` (no spaces,
line breaks, quoting or angle brackets; non-ASCII is fine and sent with SMTPUTF8): a bad
recipient is DeliveryFailed(blame="recipient"), a bad sender is TransportError.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import re
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import quote_address

from digest.errors import DeliveryFailed, TransportError
from digest.mime import CrlfMessage

__all__ = [
    "MaildirTransport",
    "NullTransport",
    "SendResult",
    "SmtpTransport",
    "Transport",
    "enhanced_code",
    "open_transport",
]

Blame = Literal["transient", "recipient", "sender"]
Stage = Literal["greeting", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"]
TlsMode = Literal["starttls", "tls", "none"]
_E = TypeVar("_E", bound=BaseException)

# Servers close idle sessions after a few minutes (Postfix: 300 s); reusing one older than
# this risks a write into a half-closed socket, so it is closed and replaced instead.
_MAX_IDLE_SECONDS = 60.0
# Many receivers limit messages per session; starting afresh now and then avoids their 421s.
_MAX_MESSAGES_PER_CONNECTION = 100
_QUIT_TIMEOUT = 2.0

# A bare addr-spec without quoting or comments, as the service stores addresses; non-ASCII
# is allowed (SMTPUTF8). Whitespace and control characters are never part of one.
_ADDRESS_PART = r'[^\s\x00-\x1f\x7f<>()\[\],;:\\"@]+'
_ADDRESS = re.compile(f"{_ADDRESS_PART}@{_ADDRESS_PART}")
_ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_BLAME_SEVERITY: dict[Blame, int] = {"transient": 0, "recipient": 1, "sender": 2}
_DEFAULT_PORTS: dict[TlsMode, int] = {"starttls": 587, "tls": 465, "none": 25}
# These mean the peer went away mid-handshake: a network fault, not a TLS misconfiguration.
_SSL_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


@dataclass(frozen=True)
class SendResult:
    """What the transport got back for one accepted message."""

    reply: str  # the server's final reply, e.g. "250 2.0.0 OK queued as ..."


@runtime_checkable
class Transport(Protocol):
    """Sends complete RFC 5322 messages; one instance is shared by concurrent senders."""

    name: str

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Send one message to the envelope recipients, or raise DeliveryFailed."""
        ...

    async def close(self) -> None:
        """Release connections; the transport cannot send afterwards."""
        ...


def open_transport(
    url: str, *, pool_size: int = 8, timeout: float = 30.0, deadline: float = 120.0
) -> Transport:
    """The transport a mail URL names; TransportError for an unknown scheme or bad URL."""
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, not {pool_size}")
    if timeout <= 0 or deadline <= 0:
        raise ValueError("timeout and deadline must be positive")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise TransportError(f"bad mail URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "maildir":
        return MaildirTransport(_maildir_path(url))
    if scheme == "null":
        return NullTransport()
    if scheme == "smtp":
        return SmtpTransport(
            _SmtpConfig.from_url(url), pool_size=pool_size, timeout=timeout, deadline=deadline
        )
    raise TransportError(f'unknown scheme "{parts.scheme}"')


def wire_form(message: bytes) -> tuple[int, bool]:
    """(size once every line ends in CRLF, as DATA sends it; whether it already does).

    The size is RFC 1870's SIZE. Counted rather than rewritten: a newsletter is tens of
    kilobytes of CRLF lines already, and a regex pass over it cost more than the envelope. A
    ``CrlfMessage`` (what ``digest.mime`` writes) is not even counted.
    """
    if isinstance(message, CrlfMessage):
        return len(message), True
    crlf = message.count(b"\r\n")
    bare_lf = message.count(b"\n") - crlf
    bare_cr = message.count(b"\r") - crlf
    return len(message) + bare_lf + bare_cr, bare_lf == bare_cr == 0


async def send_data(smtp: aiosmtplib.SMTP, message: bytes, *, crlf_only: bool) -> SMTPResponse:
    """DATA and the message; what ``smtp.data`` does, without rewriting a message in wire form.

    ``smtp.data`` runs two regex passes over every message (line endings, then leading dots):
    per newsletter more CPU than the rest of the dialogue. A message that ends every line in
    CRLF (what ``digest.mime`` writes, ``crlf_only``) only needs its leading dots doubled, one
    ``replace``; any other goes through ``smtp.data``. The connection must be this caller's
    alone (the pool's checkout), as nothing else may talk between the 354 and the end.
    """
    if not crlf_only:
        return await smtp.data(message)
    # Looking costs a fraction of replacing, and our mail (quoted-printable) seldom has a dot.
    payload = message.replace(b"\r\n.", b"\r\n..") if b"\r\n." in message else message
    if payload.startswith(b"."):
        payload = b"." + payload
    if payload and not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    payload += b".\r\n"
    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        # No await between the write and the read: the reply cannot arrive unawaited.
        protocol.write(payload)
        response = await protocol.read_response(timeout=smtp.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as smtp.data does: a half-read reply would pair with the next command
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


# An address MAIL FROM and RCPT TO can carry as it is: an ASCII dot-atom at a host name.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def envelope_address(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO: what aiosmtplib's ``quote_address`` makes of it.

    That parses every address (``email.utils.parseaddr``), two per mail: a few per cent of an
    edition's CPU. A plain address (nearly all) parses to itself, so it goes as it is; any
    other is parsed, and one that could put a command on the line is refused (ValueError).
    """
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode(encoding)


async def mail_from(
    smtp: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str
) -> SMTPResponse:
    """MAIL FROM, as ``smtp.mail`` sends it on a connection already greeted (EHLO)."""
    response = await smtp.execute_command(
        b"MAIL",
        b"FROM:" + envelope_address(sender, encoding),
        *(option.encode("ascii") for option in options),
    )
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
    return response


async def rcpt_to(smtp: aiosmtplib.SMTP, recipient: str, encoding: str) -> SMTPResponse:
    """RCPT TO, as ``smtp.rcpt`` sends it: 250 and 251 accept the recipient."""
    response = await smtp.execute_command(b"RCPT", b"TO:" + envelope_address(recipient, encoding))
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
    return response


def enhanced_code(reply: str) -> str | None:
    """The enhanced status code (RFC 3463) of a reply like ``"550 5.1.1 no such user"``."""
    text = reply.strip()
    if len(text) >= 3 and text[:3].isdigit():
        text = text[3:].lstrip(" -")
    match = _ENHANCED_CODE.match(text)
    return ".".join(match.groups()) if match else None


# --- null ---------------------------------------------------------------------------------


class NullTransport:
    """Accepts and discards every message; ``sent`` counts them."""

    name = "null"

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Count the message and drop it."""
        _check_envelope(sender, recipients)
        self.sent += 1
        return SendResult("250 discarded by the null transport")

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<NullTransport sent={self.sent}>"


# --- maildir ------------------------------------------------------------------------------


def _maildir_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise TransportError(f'maildir URL "{url}" takes no query or fragment')
    if parts.netloc == "":
        path = Path(unquote(parts.path))
    elif parts.netloc == ".":
        # "maildir://./outbox": the "." host marks a path relative to the current directory.
        path = Path.cwd() / unquote(parts.path).lstrip("/")
    else:
        raise TransportError(
            f'maildir URL "{url}" names a host; use maildir:///abs/path or maildir://./rel/path'
        )
    if not path.is_absolute() or path == Path("/") or not parts.path.strip("/"):
        raise TransportError(f'maildir URL "{url}" needs a directory path')
    return path


class MaildirTransport:
    """Delivers each message as one file in a local Maildir (created if missing)."""

    name = "maildir"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # Maildir creates only the leaf
            self._maildir = mailbox.Maildir(path, create=True)
        except OSError as exc:
            raise TransportError(f"cannot open maildir {path}: {exc}") from exc
        # Maildir's unique names come from a class-wide counter that is not thread-safe,
        # and adds run in worker threads so a slow disk does not stall the event loop.
        self._lock = threading.Lock()

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Write the message into ``new/``; the reply names its Maildir key."""
        _check_envelope(sender, recipients)
        # Maildir files use the local line ending; mailbox would keep a CR before each LF.
        local = message.replace(b"\r\n", b"\n")
        try:
            key = await asyncio.to_thread(self._add, local)
        except OSError as exc:
            raise DeliveryFailed(
                f"cannot write to maildir {self.path}: {exc}", blame="transient"
            ) from exc
        return SendResult(f"delivered to maildir {key}")

    def _add(self, message: bytes) -> str:
        with self._lock:
            return self._maildir.add(message)

    async def close(self) -> None:
        """Nothing to release: every add is complete on disk when send returns."""

    def __repr__(self) -> str:
        return f"<MaildirTransport {self.path}>"


# --- smtp ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SmtpConfig:
    host: str
    port: int
    tls: TlsMode
    verify: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> _SmtpConfig:
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise TransportError(f"bad smtp URL: {exc}") from None
        if not host:
            raise TransportError("smtp URL needs a host: smtp://host:port")
        if parts.path not in ("", "/") or parts.fragment:
            raise TransportError("smtp URL takes no path or fragment")
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in query:
                raise TransportError(f'smtp URL repeats the parameter "{key}"')
            query[key] = value
        unknown = sorted(set(query) - {"tls", "verify"})
        if unknown:
            raise TransportError(f'unknown smtp URL parameter "{unknown[0]}" (known: tls, verify)')
        tls = query.get("tls", "starttls").lower()
        if tls not in ("starttls", "tls", "none"):
            raise TransportError(f'tls must be starttls, tls or none, not "{tls}"')
        verify_text = query.get("verify", "true").lower()
        if verify_text not in ("true", "false", "1", "0", "yes", "no"):
            raise TransportError(f'verify must be true or false, not "{verify_text}"')
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if not username and password is not None:
            raise TransportError("smtp URL has a password but no user name")
        mode: TlsMode = tls  # type: ignore[assignment]  # checked just above
        return cls(
            host=host,
            port=port or _DEFAULT_PORTS[mode],
            tls=mode,
            verify=verify_text in ("true", "1", "yes"),
            username=username or None,
            password=password,
        )

    def describe(self) -> str:
        """The URL without the password, for messages and logs."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        verify = "" if self.verify else "&verify=false"
        return f"smtp://{user}{host}:{self.port}?tls={self.tls}{verify}"


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP
    last_used: float
    messages: int = 0


class _StaleConnection(Exception):
    """A reused connection turned out dead before the server accepted anything."""


class SmtpTransport:
    """SMTP through aiosmtplib with a bounded pool of reused connections."""

    name = "smtp"

    def __init__(
        self, config: _SmtpConfig, *, pool_size: int, timeout: float, deadline: float
    ) -> None:
        self.config = config
        self.pool_size = pool_size
        self.timeout = timeout
        self.deadline = deadline
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_hostname: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<SmtpTransport {self.config.describe()} pool_size={self.pool_size}>"

    @property
    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Send one message over a pooled connection; DeliveryFailed says who is to blame."""
        _check_envelope(sender, recipients)
        if self._closed:
            raise TransportError(f"{self.config.describe()}: the transport is closed")
        slots = self._bind_loop()
        async with slots:
            try:
                async with asyncio.timeout(self.deadline):
                    return await self._send_with_retry(message, sender, list(recipients))
            except TimeoutError:
                raise DeliveryFailed(
                    f"no answer from {self._where} within the {self.deadline:g} s deadline",
                    blame="transient",
                ) from None

    async def close(self) -> None:
        """Say QUIT on every idle connection; connections in use close when they return."""
        self._closed = True
        idle, self._idle = self._idle, []
        if self._loop is not asyncio.get_running_loop():
            # Opened under another (finished) event loop: they cannot talk any more.
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.smtp.close()
            return
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    # - pool -

    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            # Connections belong to the loop that opened them; a new loop (a second
            # asyncio.run) starts with an empty pool.
            for conn in self._idle:
                with contextlib.suppress(Exception):
                    conn.smtp.close()
            self._idle.clear()
            self._slots = asyncio.Semaphore(self.pool_size)
            self._loop = loop
        return self._slots

    async def _checkout(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            fresh = (
                now - conn.last_used < _MAX_IDLE_SECONDS
                and conn.messages < _MAX_MESSAGES_PER_CONNECTION
            )
            if conn.smtp.is_connected and fresh:
                return conn, True
            await self._quit(conn)
        return await self._connect(), False

    def _checkin(self, conn: _Connection) -> None:
        conn.last_used = time.monotonic()
        if self._closed or not conn.smtp.is_connected:
            self._discard(conn)
        else:
            self._idle.append(conn)

    @staticmethod
    def _discard(conn: _Connection) -> None:
        conn.smtp.close()

    async def _quit(self, conn: _Connection) -> None:
        if not conn.smtp.is_connected:
            return
        try:
            await asyncio.wait_for(conn.smtp.quit(), _QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            conn.smtp.close()

    async def _connect(self) -> _Connection:
        cfg = self.config
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=self.timeout,
            use_tls=cfg.tls == "tls",
            # STARTTLS is done by hand below: aiosmtplib's default would quietly carry on
            # in plain text when the server does not offer it.
            start_tls=False,
            validate_certs=cfg.verify,
            local_hostname=self._local_hostname,
        )
        stage: Stage = "greeting"
        try:
            await smtp.connect()
            self._local_hostname = smtp.local_hostname
            stage = "EHLO"
            await self._ehlo(smtp)
            if cfg.tls == "starttls":
                stage = "STARTTLS"
                if not smtp.supports_extension("starttls"):
                    raise TransportError(
                        f"{self._where} does not offer STARTTLS; refusing to send in plain "
                        "text (tls=starttls). Use tls=tls for implicit TLS, or tls=none "
                        "only for a trusted local relay"
                    )
                await smtp.starttls()
                stage = "EHLO"
                await smtp.ehlo()  # RFC 3207: forget what the server said before TLS
            if cfg.username is not None:
                stage = "AUTH"
                if not smtp.supports_extension("auth"):
                    raise TransportError(
                        f"{self._where} offers no AUTH (after tls={cfg.tls}); cannot log in "
                        f"as {cfg.username}"
                    )
                await smtp.login(cfg.username, cfg.password or "")
        except (TransportError, DeliveryFailed):
            smtp.close()
            raise
        except Exception as exc:
            smtp.close()
            raise self._connect_error(stage, exc) from exc
        except BaseException:
            smtp.close()
            raise
        return _Connection(smtp, last_used=time.monotonic())

    @staticmethod
    async def _ehlo(smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            # An old server without ESMTP: HELO still delivers (but offers no STARTTLS/AUTH).
            if not smtp.is_connected:
                raise
            await smtp.helo()

    def _connect_error(self, stage: Stage, exc: Exception) -> Exception:
        certificate = _find_cause(exc, ssl.SSLCertVerificationError)
        if certificate is not None:
            return TransportError(
                f"TLS certificate of {self._where} does not verify: {certificate} "
                "(verify=false disables the check, for tests only)"
            )
        tls_failure = _find_cause(exc, ssl.SSLError)
        if tls_failure is not None and not isinstance(tls_failure, _SSL_CONNECTION_LOST):
            # A protocol mismatch (e.g. tls=tls against a plain-text port) fails every time.
            return TransportError(f"TLS with {self._where} failed: {tls_failure}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if stage == "STARTTLS" and exc.code >= 500:
                return TransportError(
                    f"{self._where} refused STARTTLS: {_reply(exc.code, exc.message)}"
                )
            return self._failed(stage, exc.code, exc.message)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryFailed(
                f"timed out connecting to {self._where} ({stage}): {exc}", blame="transient"
            )
        if isinstance(exc, OSError | aiosmtplib.SMTPServerDisconnected):
            return DeliveryFailed(
                f"cannot connect to {self._where} ({stage}): {exc}", blame="transient"
            )
        if stage == "AUTH" and isinstance(exc, aiosmtplib.SMTPException):
            # e.g. "No suitable authentication method found": configuration, not this message.
            return TransportError(f"cannot log in to {self._where}: {exc}")
        if isinstance(exc, aiosmtplib.SMTPException):
            return DeliveryFailed(f"{self._where} ({stage}): {exc}", blame="transient")
        return exc

    # - one message -

    async def _send_with_retry(
        self, message: bytes, sender: str, recipients: list[str]
    ) -> SendResult:
        conn, reused = await self._checkout()
        try:
            return await self._transaction(conn, reused, message, sender, recipients)
        except _StaleConnection:
            pass
        # The server dropped a pooled session (a restart drops them all), so the other idle
        # ones are suspect too. Nothing was accepted on the dead one: a fresh try cannot
        # duplicate the message, and reused=False makes it the only retry.
        stale, self._idle = self._idle, []
        for other in stale:
            self._discard(other)
        return await self._transaction(await self._connect(), False, message, sender, recipients)

    async def _transaction(
        self,
        conn: _Connection,
        reused: bool,
        message: bytes,
        sender: str,
        recipients: list[str],
    ) -> SendResult:
        """Run MAIL, RCPT, DATA on one connection; returns it to the pool unless broken."""
        smtp = conn.smtp
        stage: Stage = "MAIL"
        try:
            size, crlf_only = wire_form(message)
            options, encoding = self._envelope_options(smtp, size, message, sender, recipients)
            try:
                await mail_from(smtp, sender, options, encoding)
            except aiosmtplib.SMTPServerDisconnected as exc:
                if reused:
                    raise _StaleConnection from exc
                raise
            stage = "RCPT"
            refused: list[DeliveryFailed] = []
            for address in recipients:
                try:
                    await rcpt_to(smtp, address, encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(self._failed("RCPT", exc.code, exc.message, recipient=address))
                    if exc.code == 421:  # the server is closing: its reply is the news
                        break
            if refused:
                raise self._worst_refusal(refused, len(recipients))
            stage = "DATA"
            response = await send_data(smtp, message, crlf_only=crlf_only)
        except (DeliveryFailed, TransportError, _StaleConnection) as exc:
            await self._after_failure(conn, exc)
            raise
        except Exception as exc:
            await self._after_failure(conn, exc)
            raise self._transaction_error(stage, exc, sender, recipients) from exc
        except BaseException as exc:  # cancelled, e.g. by the deadline: state unknown
            await self._after_failure(conn, exc)
            raise
        conn.messages += 1
        self._checkin(conn)
        return SendResult(_reply(response.code, response.message))

    def _envelope_options(
        self, smtp: aiosmtplib.SMTP, size: int, message: bytes, sender: str, recipients: list[str]
    ) -> tuple[list[str], str]:
        options: list[str] = []
        if smtp.supports_extension("size"):
            # Lets the server refuse an oversized message before we upload it.
            options.append(f"SIZE={size}")
        if smtp.supports_extension("8bitmime") and not message.isascii():
            options.append("BODY=8BITMIME")
        encoding = "ascii"
        non_ascii = [a for a in (sender, *recipients) if not a.isascii()]
        if non_ascii:
            if not smtp.supports_extension("smtputf8"):
                address = non_ascii[0]
                raise DeliveryFailed(
                    f"{self._where} does not support SMTPUTF8, needed for {address}",
                    blame="sender" if address == sender else "recipient",
                    recipient=None if address == sender else address,
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        return options, encoding

    async def _after_failure(self, conn: _Connection, exc: BaseException) -> None:
        """Keep the connection only if the server still talks to us with a clean envelope."""
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            code: int | None = exc.code
        elif isinstance(exc, DeliveryFailed):
            code = exc.smtp_code
        else:  # a timeout, a lost connection, a cancellation: the dialogue is out of step
            code = 0
        # 421 means the server is closing the session, whether or not it has yet.
        healthy = code not in (0, 421) and conn.smtp.is_connected
        if healthy:
            try:
                await conn.smtp.rset()
            except (aiosmtplib.SMTPException, OSError):
                healthy = False
        if healthy:
            self._checkin(conn)
        else:
            self._discard(conn)

    def _transaction_error(
        self, stage: Stage, exc: Exception, sender: str, recipients: list[str]
    ) -> Exception:
        lone = recipients[0] if len(recipients) == 1 else None
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return self._failed(stage, exc.code, exc.message, recipient=lone)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryFailed(
                f"{self._where} did not answer {stage} within {self.timeout:g} s",
                blame="transient",
                recipient=lone,
            )
        if isinstance(exc, OSError | aiosmtplib.SMTPServerDisconnected):
            after = " (the message may have been accepted)" if stage == "DATA" else ""
            return DeliveryFailed(
                f"connection to {self._where} lost during {stage}{after}: {exc}",
                blame="transient",
                recipient=lone,
            )
        if isinstance(exc, ValueError):
            # aiosmtplib cannot encode an address (the checks in _check_envelope let it by).
            if stage == "MAIL":
                return TransportError(f"cannot send from {sender!r}: {exc}")
            return DeliveryFailed(
                f"address refused before sending: {exc}", blame="recipient", recipient=lone
            )
        return exc

    def _failed(
        self, stage: Stage, code: int, text: str, *, recipient: str | None = None
    ) -> DeliveryFailed:
        reply = _reply(code, text)
        return DeliveryFailed(
            reply, blame=_classify(stage, code, reply), smtp_code=code, recipient=recipient
        )

    @staticmethod
    def _worst_refusal(refused: list[DeliveryFailed], n_recipients: int) -> DeliveryFailed:
        policy = [f for f in refused if (enhanced_code(f.reply) or "").startswith("5.7.")]
        if n_recipients > 1 and len(policy) == n_recipients:
            # The same policy refusal for every address is about us, not about them.
            first = policy[0]
            return DeliveryFailed(
                first.reply, blame="sender", smtp_code=first.smtp_code, recipient=None
            )
        return max(refused, key=lambda f: _BLAME_SEVERITY[f.blame])


def _classify(stage: Stage, code: int, reply: str) -> Blame:
    """Who a reply blames at a stage of the dialogue (the table in the module docstring)."""
    enhanced = enhanced_code(reply) or ""
    if code == 421 and enhanced.startswith("4.7."):
        return "sender"
    if code < 500:
        return "transient"
    if code == 530:
        return "sender"
    if stage == "MAIL":
        return "recipient" if code == 552 or enhanced.endswith(".3.4") else "sender"
    if stage == "RCPT":
        return "sender" if "relay" in reply.lower() else "recipient"
    if stage == "DATA":
        return "sender" if enhanced.startswith("5.7.") else "recipient"
    return "sender"  # greeting, EHLO, AUTH: the server refuses us, whatever the message


def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}".rstrip()


def _check_envelope(sender: str, recipients: Sequence[str]) -> None:
    """Refuse what is not a bare ``local@domain`` before it reaches a server or a file.

    aiosmtplib would otherwise "parse" ``"not an address"`` into the local user ``not`` and
    cut an address at a line break, sending somewhere nobody meant. Every transport checks,
    so a Maildir in development fails the way SMTP does in production.
    """
    if isinstance(recipients, str) or not recipients:
        raise ValueError("recipients must be a non-empty sequence of addresses")
    if not _ADDRESS.fullmatch(sender):
        raise TransportError(f"the envelope sender {sender!r} is not a bare email address")
    for address in recipients:
        if not _ADDRESS.fullmatch(address):
            raise DeliveryFailed(
                f"{address!r} is not a bare email address; not sent",
                blame="recipient",
                recipient=address,
            )


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    for _ in range(10):  # aiosmtplib wraps once or twice; the bound guards against cycles
        if seen is None:
            break
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
