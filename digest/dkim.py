"""DKIM signing of outgoing mail with dkimpy: rsa-sha256, relaxed/relaxed canonicalization.

The key is read and checked when the signer is built (at start-up), so a missing, unreadable or
invalid key stops the command with an error naming ``DIGEST_DKIM_KEY_FILE`` instead of failing
at the first mail. Only RSA keys in PEM form (PKCS#1 or PKCS#8) are accepted: dkimpy signs
ed25519 only with PyNaCl, which this service does not install.

The signature covers the headers a receiver shows or acts on, those of ``SIGNED_HEADERS`` that
are present, each listed twice in ``h=`` ("oversigned"): a second From or Subject added on the
way then breaks the signature instead of being shown under it. List-Unsubscribe and
List-Unsubscribe-Post must be signed for one-click unsubscribe (RFC 8058).

For DMARC, ``DIGEST_DKIM_DOMAIN`` must be the domain of ``DIGEST_MAIL_FROM`` or share its
organisational domain; publish the public key as a TXT record at
``<selector>._domainkey.<domain>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from digest.errors import ConfigError
from digest.settings import Settings

__all__ = ["MIN_KEY_BITS", "SIGNED_HEADERS", "Signer"]

SIGNED_HEADERS = (
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)
# Receivers ignore DKIM keys under 1024 bits (RFC 8301); 2048 is the usual size.
MIN_KEY_BITS = 1024

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TRIAL_MESSAGE = b"From: a@example.org\r\nSubject: key check\r\n\r\nkey check\r\n"


class Signer:
    """Adds a DKIM-Signature to complete messages, with one key, selector and domain."""

    def __init__(self, *, private_key: bytes, selector: str, domain: str) -> None:
        """Check the names and the key now; ValueError saying what is wrong."""
        self.selector = _selector(selector)
        self.domain = _domain(domain)
        # OpenSSL may write CRLF; dkimpy finds the PEM body only between LF line ends.
        self._key = private_key.replace(b"\r\n", b"\n")
        try:
            modulus = parse_pem_private_key(self._key)["modulus"]
        except (UnparsableKeyError, ValueError, IndexError, KeyError, TypeError):
            raise ValueError(
                "not an RSA private key in PEM form (PKCS#1 or PKCS#8; ed25519 is not supported)"
            ) from None
        self.key_bits = int(modulus).bit_length()
        if self.key_bits < MIN_KEY_BITS:
            raise ValueError(
                f"the RSA key has {self.key_bits} bits; receivers ignore DKIM keys under "
                f"{MIN_KEY_BITS} bits (use 2048)"
            )
        try:
            self.sign(_TRIAL_MESSAGE)
        except dkim.DKIMException as exc:
            raise ValueError(f"the key cannot sign: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer | None:
        """The configured signer, or None without a key; ConfigError names the bad variable."""
        if not settings.dkim_key_file or not settings.dkim_selector or not settings.dkim_domain:
            return None  # the settings refuse a partial configuration
        try:
            selector = _selector(settings.dkim_selector)
        except ValueError as exc:
            raise ConfigError("DIGEST_DKIM_SELECTOR", str(exc)) from None
        try:
            domain = _domain(settings.dkim_domain)
        except ValueError as exc:
            raise ConfigError("DIGEST_DKIM_DOMAIN", str(exc)) from None
        path = Path(settings.dkim_key_file)
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                "DIGEST_DKIM_KEY_FILE", f"cannot read {path}: {exc.strerror}"
            ) from None
        try:
            return cls(private_key=key, selector=selector, domain=domain)
        except ValueError as exc:
            raise ConfigError("DIGEST_DKIM_KEY_FILE", f"{path}: {exc}") from None

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header prepended (its line endings kept)."""
        headers, _body = dkim.rfc822_parse(message)
        present = {name.decode("ascii").lower() for name, _value in headers}
        names = [name for name in SIGNED_HEADERS if name in present]
        end = message.find(b"\n")
        linesep = b"\r\n" if end > 0 and message[end - 1 : end] == b"\r" else b"\n"
        signature: bytes = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self._key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[n.encode("ascii") for n in names + names],
            linesep=linesep,
        )
        return signature + message

    def __repr__(self) -> str:
        return f"<Signer {self.selector}._domainkey.{self.domain} rsa-{self.key_bits}>"


def _selector(value: str) -> str:
    if not _DNS_NAME.fullmatch(value):
        raise ValueError(f'"{value}" is not a DNS name')
    return value


def _domain(value: str) -> str:
    domain = value.rstrip(".").lower()
    if "." not in domain or not _DNS_NAME.fullmatch(domain):
        raise ValueError(f'"{value}" is not a DNS domain')
    return domain
