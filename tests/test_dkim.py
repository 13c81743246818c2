"""DKIM signing: a real rendered mail, signed with a key made here and verified with dkimpy.

DNS is the edge of the world: the verifier's ``dnsfunc`` answers with this key's TXT record.
"""

from __future__ import annotations

import base64
import mailbox
import re
import subprocess
from datetime import datetime
from email.policy import SMTP
from pathlib import Path
from zoneinfo import ZoneInfo

import dkim
import pytest
from conftest import on_event_loop

from digest.content import GroupSection, MailContent, PostContent, SchoolInfo
from digest.deliver import Deliverer
from digest.dkim import Signer
from digest.errors import ConfigError
from digest.ingest import import_document
from digest.periods import parse_instant
from digest.plan import plan_edition
from digest.render import Renderer
from digest.settings import Settings, load_settings
from digest.transports import open_transport

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=AMS)
SELECTOR = "wk48"
DOMAIN = "schakel.example"


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A 2048-bit RSA key file (PKCS#8, as OpenSSL 3 writes it) and its DKIM TXT record."""
    where = tmp_path_factory.mktemp("dkim")
    key_file = where / "dkim.pem"
    openssl("genrsa", "-out", str(key_file), "2048")
    public_der = openssl("rsa", "-in", str(key_file), "-pubout", "-outform", "DER")
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    return key_file, record


@pytest.fixture(scope="module")
def signer(keys: tuple[Path, bytes]) -> Signer:
    key_file, _record = keys
    signer = Signer.from_settings(settings(key_file))
    assert signer is not None
    return signer


def settings(key_file: Path | str | None, **fields: str) -> Settings:
    dkim_fields = (
        {"dkim_key_file": str(key_file), "dkim_selector": SELECTOR, "dkim_domain": DOMAIN}
        if key_file is not None
        else {}
    )
    return load_settings(
        mail_from=f"nieuwsbrief@{DOMAIN}",
        base_url="https://digest.schakel.example",
        **{**dkim_fields, **fields},
    )


def rendered_mail() -> bytes:
    """A newsletter as deliver sends it: rendered, then written with the SMTP policy."""
    content = MailContent(
        school=SchoolInfo(
            id="s1",
            name="De Schakel",
            timezone="Europe/Amsterdam",
            reply_to="info@schakel.example",
            portal_url="https://portal.example",
        ),
        locale="nl",
        recipient_names=("Fatma Yilmaz",),
        address="f.yilmaz@example.org",
        sections=(
            GroupSection(
                "g5",
                "Groep 5",
                "class",
                (
                    PostContent(
                        id="m1",
                        kind="message",
                        title="Excursie naar het bos",
                        author="Juf Anne",
                        published_at=datetime(2026, 11, 24, 10, 15, tzinfo=AMS),
                        body_html="<p>We gingen naar het bos. Neem laarzen mee.</p>",
                        url="https://portal.example/posts/m1",
                    ),
                ),
            ),
        ),
        week=48,
        preferences_url="https://digest.schakel.example/preferences/tok",
        unsubscribe_url="https://digest.schakel.example/unsubscribe/tok",
    )
    renderer = Renderer(settings(None))
    return renderer.render(content, now=NOW).message.as_bytes(policy=SMTP)


def verifies(message: bytes, record: bytes) -> bool:
    looked_up: list[bytes] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        looked_up.append(name)
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    result = bool(dkim.verify(message, dnsfunc=dnsfunc))
    assert looked_up == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]
    return result


def signature_tags(message: bytes) -> dict[str, str]:
    header = message.split(b"\r\n\r\n", 1)[0].decode()
    match = re.match(r"DKIM-Signature:(.*?)\r\n(?=\S)", header, re.S)
    assert match, "the signature is the first header"
    value = "".join(match.group(1).split())
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_a_signed_newsletter_verifies(signer: Signer, keys: tuple[Path, bytes]):
    original = rendered_mail()
    signed = signer.sign(original)
    assert signed.endswith(original) and signed.startswith(b"DKIM-Signature:")
    assert verifies(signed, keys[1])
    tags = signature_tags(signed)
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    assert tags["d"] == DOMAIN and tags["s"] == SELECTOR


def test_the_signature_covers_the_headers_a_receiver_shows_and_acts_on(signer: Signer):
    tags = signature_tags(signer.sign(rendered_mail()))
    signed = tags["h"].split(":")
    expected = [
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
    ]
    # Each twice: the second, matching no header, forbids adding one on the way.
    assert signed == expected + expected


def test_tampering_breaks_the_signature(signer: Signer, keys: tuple[Path, bytes]):
    signed = signer.sign(rendered_mail())
    subject = re.search(rb"\r\nSubject: ([^\r]*)", signed)
    assert subject
    tampered = signed.replace(subject.group(1), b"Dringend: betaal de ouderbijdrage", 1)
    assert not verifies(tampered, keys[1])
    head, body = signed.split(b"\r\n\r\n", 1)
    assert not verifies(head + b"\r\nSubject: Nog een onderwerp\r\n\r\n" + body, keys[1])
    assert not verifies(head + b"\r\n\r\n" + body.replace(b"bos", b"bus", 1), keys[1])
    one_click = re.sub(
        rb"List-Unsubscribe: <[^>]*>", b"List-Unsubscribe: <https://evil.example/>", signed
    )
    assert one_click != signed and not verifies(one_click, keys[1])


def test_the_signature_survives_the_maildir_line_endings_and_refolding(
    signer: Signer, keys: tuple[Path, bytes]
):
    signed = signer.sign(rendered_mail())
    assert verifies(signed.replace(b"\r\n", b"\n"), keys[1])  # what the Maildir transport writes
    # relaxed/relaxed: a relay that refolds a header does not break it
    refolded = signed.replace(b"\r\nSubject: ", b"\r\nSubject:   ", 1)
    assert verifies(refolded, keys[1])


def test_lf_messages_get_an_lf_signature(signer: Signer, keys: tuple[Path, bytes]):
    signed = signer.sign(rendered_mail().replace(b"\r\n", b"\n"))
    head = signed.split(b"\n\n", 1)[0]
    assert b"\r" not in head
    assert verifies(signed, keys[1])


def test_no_key_configured_means_no_signer():
    assert Signer.from_settings(settings(None)) is None


def test_a_pkcs1_key_works_too(tmp_path: Path, keys: tuple[Path, bytes]):
    pkcs1 = tmp_path / "pkcs1.pem"
    openssl("rsa", "-in", str(keys[0]), "-traditional", "-out", str(pkcs1))
    assert pkcs1.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    signer = Signer.from_settings(settings(pkcs1))
    assert signer is not None
    assert verifies(signer.sign(rendered_mail()), keys[1])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        (b"", "not an RSA private key"),
        (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not an RSA"),
        ("short", "512 bits"),
        ("ed25519", "ed25519 is not supported"),
    ],
)
def test_a_bad_key_stops_start_up_naming_the_variable(
    tmp_path: Path, content: bytes | str | None, problem: str
):
    key_file = tmp_path / "dkim.pem"
    if content == "short":
        openssl("genrsa", "-out", str(key_file), "512")
    elif content == "ed25519":
        openssl("genpkey", "-algorithm", "ed25519", "-out", str(key_file))
    elif isinstance(content, bytes):
        key_file.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        Signer.from_settings(settings(key_file))
    assert error.value.variable == "DIGEST_DKIM_KEY_FILE"
    assert problem in str(error.value) and str(key_file) in str(error.value)


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("dkim_selector", "wk 48", "DIGEST_DKIM_SELECTOR"),
        ("dkim_domain", "localhost", "DIGEST_DKIM_DOMAIN"),
        ("dkim_domain", "schakel_example.nl", "DIGEST_DKIM_DOMAIN"),
    ],
)
def test_bad_selector_or_domain_names_the_variable(
    keys: tuple[Path, bytes], field: str, value: str, variable: str
):
    with pytest.raises(ConfigError) as error:
        Signer.from_settings(settings(keys[0], **{field: value}))
    assert error.value.variable == variable


def test_a_partial_dkim_configuration_is_refused_by_the_settings(keys: tuple[Path, bytes]):
    with pytest.raises(ConfigError) as error:
        load_settings(dkim_key_file=str(keys[0]), dkim_domain=DOMAIN)
    assert error.value.variable == "DIGEST_DKIM_SELECTOR"


def test_the_deliverer_sends_signed_mail(
    sessions, small_school, tmp_path: Path, signer: Signer, keys: tuple[Path, bytes]
):
    with sessions() as session, session.begin():
        import_document(session, small_school)
        plan_edition(session, "s1", parse_instant("2026-11-27T16:00", "Europe/Amsterdam"))

    async def send() -> None:
        transport = open_transport(f"maildir://{tmp_path / 'outbox'}")
        try:
            await Deliverer(sessions, transport, settings(None), signer=signer.sign).run(NOW)
        finally:
            await transport.close()

    on_event_loop(send())
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    mails = [box.get_bytes(key) for key in box.iterkeys()]
    assert len(mails) == 2
    for mail in mails:
        assert mail.startswith(b"DKIM-Signature:")
        assert verifies(mail, keys[1])
