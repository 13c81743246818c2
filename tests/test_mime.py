"""The mail's bytes, written directly (digest/mime.py), parse back to what was rendered.

Parsed with the standard library (``email.policy.default``): headers decode to the names and
subjects we put in, Dutch, Arabic and emoji alike; the text, HTML and calendar parts decode to the
rendered ones; every line ends in CRLF and keeps RFC 5322's and 2045's lengths; a numbered part
and a DKIM signature still hold.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import random
import re
import subprocess
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from mail_weeks import HEAVY_WEEKS, NOW, SETTINGS, make_content, make_post, typical_week

from digest import mime
from digest.calendar import mail_calendar
from digest.content import EventInfo, GroupSection, MailContent, SchoolInfo
from digest.dkim import Signer
from digest.mime import CrlfMessage
from digest.render import RenderedMail, Renderer

NAMES = {
    "ascii": ("Sem de Vries",),
    "dutch": ("Zoë Çelik-van ’t Hoff",),
    "arabic": ("فاطمة الزهراء",),
    "emoji": ("Anne 🌷 Jansen", "Bram 👨‍👩‍👧 Bos"),
    "specials": ('Jansen, "Piet" (opa)',),
}
SUBJECTS = {
    "ascii": "Nieuwsbrief De Schakel – week 48",
    "long ascii": "Nieuws " + " ".join(f"woord{i}" for i in range(40)),
    "arabic": "النشرة الإخبارية لمدرسة الرابطة — الأسبوع ٤٨ " * 3,
    "emoji": "🎄 Kerstviering 🎅🏽 en 👨‍👩‍👧‍👦 " * 4,
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects, message.defects
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def assert_wire_format(data: bytes) -> None:
    """ASCII, CRLF only, header lines ≤ 78 (≤ 998 for an unfoldable token), body lines ≤ 76.

    CRLF only is what a ``CrlfMessage`` promises the SMTP transport, which then sends it as is.
    """
    assert isinstance(data, CrlfMessage)
    assert data.isascii()
    assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        # Longer only for one word that cannot be folded (a URL), alone or after the name.
        words = line.split(b": ", 1)[-1].strip()
        assert len(line) <= 78 or (b" " not in words and len(line) <= 998), line
    for line in body.split(b"\r\n"):
        if not line.startswith(b"--=_") and b":" not in line:  # part headers are short anyway
            assert len(line) <= 76, line
    for word in re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", head):
        assert len(word) <= 75, word


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def school(name: str = "De Schakel") -> SchoolInfo:
    return SchoolInfo("s1", name, "Europe/Amsterdam", "info@schakel.example", None)


@pytest.mark.parametrize("names", list(NAMES), ids=list(NAMES))
@pytest.mark.parametrize("subject", list(SUBJECTS), ids=list(SUBJECTS))
def test_headers_and_bodies_parse_back(renderer: Renderer, names: str, subject: str) -> None:
    content = replace(
        typical_week(),
        recipient_names=NAMES[names][:2],
        school=school("Basisschool Al-Amal — مدرسة الأمل" if names == "arabic" else "De Schakel"),
        extra_headers={"X-Digest-Note": SUBJECTS[subject]},
    )
    mail = renderer.render(content, now=NOW)
    assert_wire_format(mail.data)
    message = parse(mail.data)
    assert message["Subject"] == mail.subject
    assert message["X-Digest-Note"] == " ".join(SUBJECTS[subject].split())
    sender = message["From"].addresses[0]
    assert sender.display_name == content.school.name and sender.addr_spec == SETTINGS.mail_from
    recipient = message["To"].addresses[0]
    assert recipient.addr_spec == content.address
    shown = NAMES[names][0] if len(NAMES[names]) == 1 else " en ".join(NAMES[names])
    assert recipient.display_name == shown
    assert message["Reply-To"].addresses[0].addr_spec == "info@schakel.example"
    assert message["Message-ID"] == mail.message_id
    assert message["Content-Language"] == "nl"
    assert content.school.name in str(message["List-Id"])
    assert f"<{content.unsubscribe_url}>" in str(message["List-Unsubscribe"])
    # The typical week has an event: the alternatives, then the calendar.
    assert message.get_content_type() == "multipart/mixed"
    alternative = next(message.iter_parts())
    assert [part.get_content_type() for part in alternative.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert body_of(message, "plain") == mail.text
    assert body_of(message, "html") == mail.html + "\n"


def test_the_calendar_attachment_arrives_byte_for_byte(renderer: Renderer) -> None:
    post = make_post("e1", event=EventInfo(NOW.replace(day=30), None, "Gymzaal"))
    content = make_content(GroupSection("g5", "Groep 5", "class", (post,)))
    mail = renderer.render(content, now=NOW)
    assert_wire_format(mail.data)
    message = parse(mail.data)
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename()
    assert attachment.get_payload(decode=True) == mail_calendar(content, SETTINGS, now=NOW)
    assert body_of(message, "html") == mail.html + "\n"


def test_numbered_parts_each_parse_with_their_own_message_id(renderer: Renderer) -> None:
    mails: list[RenderedMail] = renderer.render_parts(HEAVY_WEEKS["all three together"](), now=NOW)
    assert len(mails) >= 2
    first = mails[0].message_id
    for number, mail in enumerate(mails, start=1):
        assert_wire_format(mail.data)
        message = parse(mail.data)
        assert message["Message-ID"] == (
            first if number == 1 else first[:-1].replace("@", f".p{number}@", 1) + ">"
        )
        assert body_of(message, "html") == mail.html + "\n"
        assert body_of(message, "plain") == mail.text


def test_quoted_printable_keeps_trailing_spaces_dots_and_long_lines() -> None:
    text = "regel met spatie \n.\n" + "x" * 300 + "\n=3D is geen code\nlaatste"
    data = mime.build_mail([("Subject", "t")], text, "<p>" + "é" * 500 + "</p>")
    assert_wire_format(data)
    assert b"\r\n." not in data  # the line "." is "=2E": SMTP has no dot to double
    message = parse(data)
    assert body_of(message, "plain") == text + "\n"
    assert body_of(message, "html") == "<p>" + "é" * 500 + "</p>\n"


@pytest.mark.parametrize("seed", range(20))
def test_pieces_encoded_apart_decode_to_their_concatenation(seed: int) -> None:
    # A page is encoded once, its pieces joined to each mail's own (its links) with soft line
    # breaks; an empty piece (two posts side by side) adds nothing.
    rng = random.Random(seed)
    alphabet = ["a", " ", "=", "é", "\n", "\t", "x" * 70, "🌷", "."]
    pieces = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        for _ in range(rng.randint(2, 6))
    ]
    pieces.insert(rng.randint(0, len(pieces)), "")
    own = [index for index in range(len(pieces)) if rng.random() < 0.4]
    page = mime.encoded_pieces(pieces, own)
    assert [index for index, piece in enumerate(page) if isinstance(piece, str)] == own
    expected = "".join(pieces)
    for given in (pieces, page):
        encoded = mime.quoted_printable_pieces(given)
        for line in encoded.split(b"\r\n"):
            assert len(line) <= 76, line
            assert not line.startswith(b"."), line  # "=2E" instead, where a line break falls
        whole = binascii.a2b_qp(encoded).decode("utf-8").replace("\r\n", "\n")
        assert whole == (expected if expected.endswith("\n") else expected + "\n")


def test_header_encoding_rules() -> None:
    assert mime.phrase("De Schakel") == "De Schakel"
    assert mime.phrase("Schakel, De") == '"Schakel, De"'
    assert mime.phrase('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert mime.address("", "a@b.example") == "a@b.example"
    assert mime.address("Zoë", "a@bücher.example").endswith("<a@xn--bcher-kva.example>")
    words = mime.encoded_words("👨‍👩‍👧" * 20).split(" ")
    assert all(len(word) <= 75 for word in words)
    decoded = "".join(base64.b64decode(w[10:-2]).decode("utf-8") for w in words)
    assert decoded == "👨‍👩‍👧" * 20  # every word holds whole characters
    with pytest.raises(ValueError):
        mime.header("Subject", "niet\r\nBcc: x@y")
    with pytest.raises(ValueError):
        mime.address("x", "zoë@example.org")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    where = tmp_path_factory.mktemp("dkim")
    key_file = where / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key_file), "2048"], check=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key_file), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key_file, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_a_dkim_signature_over_the_direct_bytes_verifies(
    renderer: Renderer, keys: tuple[Path, bytes]
) -> None:
    key_file, record = keys
    signer = Signer(private_key=key_file.read_bytes(), selector="wk48", domain="schakel.example")
    content: MailContent = replace(typical_week(), recipient_names=NAMES["arabic"])
    signed = signer.sign(renderer.render(content, now=NOW).data)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == b"wk48._domainkey.schakel.example." else None

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Groep", b"Groot", 1), dnsfunc=dnsfunc)
