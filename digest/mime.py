"""Write a mail's bytes directly: encoded, folded headers; text and HTML; an attachment.

``email.message.EmailMessage`` takes 3–10 ms to build and flatten a newsletter (its header
objects, content manager and generator are general); this writes the one shape we send in
well under a millisecond. What makes it correct, and what ``tests/test_mime.py`` checks by
parsing the bytes back with the standard library:

* every line ends in CRLF and is at most 76 characters in a body and 78 in the header, but for a
  line holding a single word that cannot be folded (a long URL, or a first encoded word after a
  long header name), which stays within RFC 5322's 998;
* a non-ASCII header text is RFC 2047 encoded words (UTF-8, base64), each at most 75 characters
  and holding whole characters; a phrase with specials is a quoted string;
* bodies are quoted-printable (text and HTML: readable, and they pass any relay without
  8BITMIME) or base64 (the calendar, whose CRLF line ends must survive byte for byte);
* boundaries start with ``=_``, which neither encoding can produce, so they never occur in a body.
"""

from __future__ import annotations

import base64
import binascii
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

LINE = 78  # RFC 5322's recommended limit
HARD_LINE = 998  # RFC 5322's limit
_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters: "=?utf-8?b?…?=" stays within 75
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_FIELD_NAME = re.compile(r"[!-9;-~]+")


class CrlfMessage(bytes):
    """A message as ``build_mail`` writes it, every line ending in CRLF.

    The SMTP transport sends such a message as it is; other bytes it first counts for bare line
    ends (``digest.transports.wire_form``): three scans of tens of kilobytes, per mail.
    """

    __slots__ = ()


@dataclass(frozen=True)
class Attachment:
    """A text attachment (the calendar): sent base64-encoded so its bytes arrive unchanged."""

    data: bytes
    subtype: str
    filename: str
    params: dict[str, str] = field(default_factory=dict)  # e.g. method=PUBLISH, charset=utf-8


def encoded_words(text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8, base64) separated by spaces."""
    words = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append("".join(chunk))
    return " ".join(
        f"=?utf-8?b?{base64.b64encode(word.encode('utf-8')).decode('ascii')}?=" for word in words
    )


@functools.lru_cache(maxsize=1024)  # a page's subject, a school's name: the same in many mails
def unstructured(text: str) -> str:
    """A Subject-like header value: itself when ASCII, else encoded words."""
    if text.isascii() and all(len(word) < HARD_LINE - 80 for word in text.split(" ")):
        return text
    return encoded_words(text)


def phrase(text: str) -> str:
    """A display name: an atom run as is, other ASCII as a quoted string, else encoded words."""
    if not text:
        return ""
    if not text.isascii():
        # Only the words that need it are encoded, consecutive ones together: whitespace between
        # two encoded words does not count (RFC 2047), and the stdlib's phrase parser, unlike
        # the RFC, puts a space there; an atom beside an encoded word keeps its space either way.
        pieces: list[str] = []
        run: list[str] = []
        for word in text.split():
            if _ATOM.fullmatch(word):
                if run:
                    pieces.append(encoded_words(" ".join(run)))
                    run = []
                pieces.append(word)
            else:
                run.append(word)
        if run:
            pieces.append(encoded_words(" ".join(run)))
        return " ".join(pieces)
    if _ATOM.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def address(display_name: str, addr_spec: str) -> str:
    """``Name <local@domain>``; a non-ASCII domain is written as IDNA (punycode)."""
    local, _, domain = addr_spec.rpartition("@")
    if not local.isascii():
        raise ValueError(f"{addr_spec!r}: a non-ASCII local part needs SMTPUTF8")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    spec = f"{local}@{domain}"
    shown = phrase(display_name)
    return f"{shown} <{spec}>" if shown else spec


def header(name: str, value: str) -> str:
    """One header field, folded at spaces to 78 columns where it can be, with CRLF line ends.

    ``value`` must already be ASCII (see ``unstructured``, ``phrase``, ``address``).
    """
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header field name")
    if not value.isascii() or "\r" in value or "\n" in value:
        raise ValueError(f"{name}: the value must be one line of ASCII")
    line = f"{name}: {value}"
    if len(line) <= LINE:
        return line + "\r\n"
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        # Never right after the colon: a parser would keep the space the value then starts
        # with. So a first word too long for 78 columns makes a longer first line (≤ 998).
        if len(current) + 1 + len(word) > LINE and current != f"{name}:":
            lines.append(current)
            current = ""
        current = f"{current} {word}"
    lines.append(current)
    if any(len(line) > HARD_LINE for line in lines):
        raise ValueError(f"{name}: a word longer than {HARD_LINE - 2} characters cannot be folded")
    return "\r\n".join(lines) + "\r\n"


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends and a final line end (lines ≤ 76).

    No line starts with a dot ("=2E" instead), so SMTP has no dots to double in our parts: that
    took a copy of every mail as it was sent (``digest.transports.send_data``).
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if b"\n." in encoded:
        encoded = encoded.replace(b"\n.", b"\n=2E")
    if encoded.startswith(b"."):
        encoded = b"=2E" + encoded[1:]
    lines = encoded.split(b"\n")
    # b2a_qp can end a line with "=20" one column too far, and a "=2E" makes a line longer.
    if max(map(len, lines)) > 76:
        encoded = b"\n".join(map(_fold_qp_line, lines))
    return encoded.replace(b"\n", b"\r\n")


def _fold_qp_line(line: bytes) -> bytes:
    """An encoded line of more than 76 characters broken with soft line breaks, never in "=XX",
    and never before a dot (which is encoded instead)."""
    folded = []
    while len(line) > 76:
        cut = 75
        if line[cut - 1 : cut] == b"=":
            cut -= 1
        elif line[cut - 2 : cut - 1] == b"=":
            cut -= 2
        folded.append(line[:cut] + b"=")
        line = line[cut:]
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
    folded.append(line)
    return b"\n".join(folded)


def qp_piece(piece: str) -> bytes:
    """A piece of a body, quoted-printable, ending in a soft line break (``=`` CRLF).

    Pieces encoded so can be joined: a soft break decodes to nothing, so the decoded body is
    the pieces' concatenation, and each piece starts on a line of its own.
    """
    if not piece:
        return b""  # not a line break: it would decode to one
    encoded = quoted_printable(piece)[:-2]  # without the line end quoted_printable added
    if piece.endswith("\n"):
        return encoded + b"\r\n"
    head, _, last = encoded.rpartition(b"\r\n")
    if len(last) < 76:
        return encoded + b"=\r\n"
    # The "=" would make the last line 77 long: break it once more, never inside "=XX", and
    # a dot that would start the new line encoded.
    cut = -3 if last[-3:-2] == b"=" else -1
    tail = b"=2E" if last[cut:] == b"." else last[cut:]
    return (head + b"\r\n" if head else b"") + last[:cut] + b"=\r\n" + tail + b"=\r\n"


# A piece that recurs: a post's HTML in many pages, a post's paragraph in many mails.
_qp_shared = functools.lru_cache(maxsize=2048)(qp_piece)


def quoted_printable_pieces(pieces: Sequence[str | bytes]) -> bytes:
    """The concatenation of ``pieces`` as a quoted-printable body.

    A ``bytes`` piece is one encoded beforehand (see ``encoded_pieces``): a piece shared by many
    mails is encoded once. A ``str`` piece is encoded here.
    """
    *most, final = pieces
    body = [piece if isinstance(piece, bytes) else qp_piece(piece) for piece in most]
    body.append(final if isinstance(final, bytes) else quoted_printable(final))
    return b"".join(body)


def encoded_pieces(pieces: Sequence[str], keep: Sequence[int] = ()) -> list[str | bytes]:
    """``pieces`` encoded for ``quoted_printable_pieces``, but those at the indexes ``keep``.

    A page shared by many mails is encoded once this way, and a post's piece once for all the
    pages that hold it; each mail then encodes only its own pieces (its personal links), which
    take the places left as ``str``.
    """
    last = len(pieces) - 1
    kept = set(keep)
    return [
        piece
        if index in kept
        else (quoted_printable(piece) if index == last else _qp_shared(piece))
        for index, piece in enumerate(pieces)
    ]


def quoted_printable_paragraphs(text: str) -> bytes:
    """``text`` quoted-printable, paragraph by paragraph: a post's paragraphs, the same in
    every mail that carries the post, are each encoded once."""
    *paragraphs, final = text.split("\n\n")
    encoded = [_qp_shared(f"{paragraph}\n\n") for paragraph in paragraphs]
    return quoted_printable_pieces([*encoded, final])


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _param(name: str, value: str) -> str:
    if value.isascii() and '"' not in value and "\\" not in value:
        return f'; {name}="{value}"'
    return f"; {name}*=utf-8''{quote(value, safe='')}"  # RFC 2231


def _text_part(subtype: str, body: str | Sequence[str | bytes]) -> bytes:
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    if not isinstance(body, str):
        encoded = quoted_printable_pieces(body)
    elif subtype == "plain":
        encoded = quoted_printable_paragraphs(body)
    else:
        encoded = quoted_printable(body)
    return head.encode("ascii") + encoded


def _attachment_part(attachment: Attachment) -> bytes:
    params = "".join(_param(key, value) for key, value in attachment.params.items())
    head = (
        f"Content-Type: text/{attachment.subtype}{params}{_param('name', attachment.filename)}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment{_param('filename', attachment.filename)}\r\n\r\n"
    )
    return head.encode("ascii") + _base64(attachment.data)


def _multipart(boundary: str, parts: Sequence[bytes]) -> bytes:
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    # The CRLF before each delimiter belongs to the delimiter, not to the part before it.
    return body + f"--{boundary}--\r\n".encode("ascii")


def _boundary() -> str:
    # Unguessable is not needed (the "=_" keeps it out of any body), and os.urandom per mail
    # costs more than building the rest of the headers.
    return f"=_{random.getrandbits(96):024x}"


def build_mail(
    headers: Sequence[tuple[str, str]],
    text: str | Sequence[str | bytes],
    html: str | Sequence[str | bytes],
    attachment: Attachment | None = None,
) -> CrlfMessage:
    """The mail's bytes: ``headers`` (name, ASCII value) then the text and HTML alternatives.

    ``text`` and ``html`` may each be a sequence of pieces whose concatenation is the part (see
    ``quoted_printable_pieces``): a piece that recurs (the same page in many mails) is encoded
    once.

    With an attachment the mail is multipart/mixed: the alternatives, then the attachment.
    ``MIME-Version`` and the ``Content-*`` headers of the structure are added here.
    """
    alternative = _boundary()
    alternatives = _multipart(alternative, (_text_part("plain", text), _text_part("html", html)))
    alternative_type = f'multipart/alternative; boundary="{alternative}"'
    head = "".join(header(name, value) for name, value in headers)
    head += "MIME-Version: 1.0\r\n"
    if attachment is None:
        top = f"{head}Content-Type: {alternative_type}\r\n\r\n".encode("ascii")
        return CrlfMessage(b"".join((top, alternatives)))
    mixed = _boundary()
    inner = f"Content-Type: {alternative_type}\r\n\r\n".encode("ascii") + alternatives
    body = _multipart(mixed, (inner, _attachment_part(attachment)))
    top = f'{head}Content-Type: multipart/mixed; boundary="{mixed}"\r\n\r\n'.encode()
    return CrlfMessage(b"".join((top, body)))
