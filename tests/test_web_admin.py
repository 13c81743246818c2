"""The administrators' pages as an administrator uses them: a real server, browser and SMTP server.

Two schools: De Schakel (s1, requires approval) with an administrator, De Regenboog (s2) with
another. The week is the one before now, so approving and sending happen on the real clock.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any, cast

import pytest
from admin_site import csrf_of, log_in, running
from click.testing import CliRunner
from conftest import child, document, group, guardian, on_event_loop, post, school
from fastapi.testclient import TestClient
from mail_browser import launch_chromium
from playwright.sync_api import sync_playwright
from smtp_server import SmtpServer
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from digest.admins import (
    FAILURE_WINDOW,
    LOCK_TIME,
    LoginLocked,
    ThrottleKeys,
    authenticate,
    create_admin,
)
from digest.cli import main
from digest.ingest import import_document
from digest.models import (
    AuditEvent,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Guardian,
    Suppression,
    utcnow,
)
from digest.periods import latest_cutoff
from digest.plan import plan_edition
from digest.settings import Settings
from digest.web import create_app
from scheduler.jobs import send_due

ANNE, ANNE_PASSWORD = "anne@schakel.example", "correct horse battery"
BOB, BOB_PASSWORD = "bob@regenboog.example", "another good password"
CUTOFF = latest_cutoff(utcnow(), weekday=4, clock="16:00", zone="Europe/Amsterdam")


def week_document() -> dict[str, Any]:
    published = (CUTOFF - timedelta(days=2)).isoformat()
    starts = CUTOFF + timedelta(days=5)
    return document(
        schools=[
            school("s1", requires_approval=True),
            school("s2", name="De Regenboog", reply_to="info@regenboog.example"),
        ],
        groups=[
            group("gs", kind="school", name="De Schakel"),
            group("g5", name="Groep 5"),
            group("hs", school_id="s2", kind="school", name="De Regenboog"),
        ],
        children=[
            child("c1", ["g5"], consent="portal", first_name="Sem"),
            child("c2", ["g5"]),
            child("d1", ["hs"], school_id="s2"),
        ],
        guardians=[
            guardian("p1", ["c1"], name="Fatma Yilmaz"),
            guardian("p2", ["c2"], delivery="app"),
            guardian("p3", ["c2"], email=None, name="Kees Jansen"),
            guardian("p4", ["c2"], name="Lotte de Vries"),
            guardian("q1", ["d1"], school_id="s2"),
        ],
        posts=[
            post(
                "m1",
                "g5",
                published,
                title="Excursie naar het bos",
                media=[
                    {
                        "id": "f1",
                        "type": "image",
                        "url": "https://portal.example/f1.jpg",
                        "alt": "Kinderen in het bos",
                        "child_ids": ["c1"],
                    }
                ],
                event={
                    "starts_at": starts.isoformat(),
                    "ends_at": (starts + timedelta(hours=3)).isoformat(),
                    "location": "Kagerbos",
                },
            ),
            post("m2", "gs", published, title="Sinterklaas op school"),
            post("n1", "hs", published, title="Nieuws van De Regenboog"),
        ],
    )


@pytest.fixture
def week(sessions: sessionmaker[Session]) -> dict[str, int]:
    """The week imported and planned for both schools, and an administrator for each."""
    with sessions() as session, session.begin():
        import_document(session, week_document())
        editions = {
            school_id: plan_edition(session, school_id, CUTOFF).edition.id
            for school_id in ("s1", "s2")
        }
        create_admin(session, ANNE, ANNE_PASSWORD, ["s1"], at=utcnow())
        create_admin(session, BOB, BOB_PASSWORD, ["s2"], at=utcnow())
    return editions


def settings_for(mail_url: str = "null://", base_url: str = "http://testserver") -> Settings:
    return Settings(
        base_url=base_url,
        secret_key="admin-pages-test-key",
        mail_from="nieuwsbrief@schakel.example",
        mail_url=mail_url,
    )


@pytest.fixture
def client(sessions: sessionmaker[Session], week: dict[str, int]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(), sessions)) as test_client:
        yield test_client


def signed_in(client: TestClient, email: str = ANNE, password: str = ANNE_PASSWORD) -> str:
    """Log in; the CSRF token of the session's forms."""
    answer = log_in(client, email, password)
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/admin/").text)


def edition_status(sessions: sessionmaker[Session], edition_id: int) -> EditionStatus:
    with sessions() as session:
        return session.get_one(Edition, edition_id).status


def audit(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(raw, policy=default))


# --- end to end in Chromium -----------------------------------------------------------------


def test_an_administrator_previews_tests_and_approves_in_a_browser(
    sessions: sessionmaker[Session], week: dict[str, int], smtp_server: SmtpServer
) -> None:
    settings = settings_for(mail_url=smtp_server.url())
    edition_id = week["s1"]
    assert edition_status(sessions, edition_id) is EditionStatus.AWAITING_APPROVAL
    with running(create_app(settings, sessions)) as base, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"{base}/admin/")
        assert page.url == f"{base}/admin/login"
        page.fill("#email", ANNE)
        page.fill("#password", ANNE_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="De Schakel").click()
        assert "De Regenboog" not in page.content()
        page.locator(f"a[href='/admin/editions/{edition_id}']").first.click()
        assert page.get_by_role("heading", level=1).inner_text() == (
            f"Edition {edition_id}: awaiting_approval"
        )
        fatma = page.locator("tr[data-guardian=p1]").inner_text()
        assert "p1@ouders.example" in fatma and "queued" in fatma
        assert "unreachable" in page.locator("tr[data-guardian=p3]").inner_text()
        assert "app" in page.locator("tr[data-guardian=p2]").inner_text()

        page.locator("tr[data-guardian=p1]").get_by_role("link", name="Preview").click()
        frame = page.frame_locator("iframe.mail")
        assert "Excursie naar het bos" in frame.locator("body").inner_text()
        assert page.locator("iframe.mail").get_attribute("sandbox") == ""
        assert "Sinterklaas op school" in page.locator("pre.text").inner_text()
        headers = page.locator("table.headers").inner_text()
        assert "List-Unsubscribe" in headers and "p1@ouders.example" in headers
        attachments = page.locator("table.attachments").inner_text()
        assert "text/calendar" in attachments and ".ics" in attachments
        assert "Sem (consent: portal)" in page.locator("#withheld").inner_text()

        page.get_by_role("button", name=f"Send a test to {ANNE}").click()
        assert f"A test was sent to {ANNE}" in page.get_by_role("status").inner_text()
        assert len(smtp_server.messages) == 1
        test_mail = smtp_server.messages[0]
        assert test_mail.rcpt_tos == (ANNE,)
        received = parse(test_mail.content)
        assert received["To"].addresses[0].addr_spec == ANNE
        assert str(received["Subject"]).startswith("[TEST] ")
        assert "p1@ouders.example" not in test_mail.content.decode("ascii", "replace")
        assert received["List-Unsubscribe"] is None
        with sessions() as session:  # the test is no outbox row; the parent's row is untouched
            rows = session.scalars(select(Delivery).where(Delivery.edition_id == edition_id))
            assert {row.address: row.status for row in rows} == {
                "p1@ouders.example": DeliveryStatus.QUEUED,
                "p4@ouders.example": DeliveryStatus.QUEUED,
            }

        page.goto(f"{base}/admin/editions/{edition_id}")
        page.get_by_role("button", name="Approve").click()
        assert page.get_by_role("heading", level=1).inner_text() == (
            f"Edition {edition_id}: planned"
        )
        assert f"Last decided by {ANNE}" in page.content()

        # The other school's administrator is refused De Schakel's pages.
        other = browser.new_page()
        other.goto(f"{base}/admin/login")
        other.fill("#email", BOB)
        other.fill("#password", BOB_PASSWORD)
        other.get_by_role("button", name="Log in").click()
        for path in (
            "/admin/schools/s1",
            f"/admin/editions/{edition_id}",
            "/admin/schools/s1/preview?guardian=p1",
        ):
            answer = other.goto(base + path)
            assert answer is not None and answer.status == 403, path
        browser.close()

    report = on_event_loop(send_due(sessions, settings, utcnow(), school_id="s1"))
    assert report.counts == {"sent": 2}
    parents = {m.rcpt_tos: parse(m.content) for m in smtp_server.messages[1:]}
    assert set(parents) == {("p1@ouders.example",), ("p4@ouders.example",)}
    assert not str(parents[("p1@ouders.example",)]["Subject"]).startswith("[TEST]")
    assert [e.guardian_id for e in audit(sessions, "preview")] == ["p1"]
    assert [e.guardian_id for e in audit(sessions, "send_test")] == ["p1"]
    assert len(audit(sessions, "edition_approve")) == 1


# --- sessions, scoping, CSRF, throttling ----------------------------------------------------


def test_not_logged_in_a_page_leads_to_the_login_and_a_form_is_refused(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    answer = client.get("/admin/schools/s1", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/login"
    refused = client.post(f"/admin/editions/{week['s1']}/decide", data={"decision": "approve"})
    assert refused.status_code == 403
    assert edition_status(sessions, week["s1"]) is EditionStatus.AWAITING_APPROVAL


def test_a_wrong_password_is_refused_and_the_session_cookie_is_strict(
    sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    app = create_app(settings_for(base_url="https://digest.example"), sessions)
    with TestClient(app, base_url="https://testserver") as https_client:
        wrong = log_in(https_client, ANNE, "not the password")
        assert wrong.status_code == 401
        assert "The e-mail address or the password is wrong." in wrong.text
        right = log_in(https_client, ANNE, ANNE_PASSWORD)
        assert right.status_code == 303
        cookie = right.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=lax", "secure", "path=/admin", "max-age=43200"):
            assert flag in cookie
        assert https_client.get("/admin/").status_code == 200
    with TestClient(create_app(settings_for(), sessions)) as plain:
        assert "secure" not in log_in(plain, ANNE, ANNE_PASSWORD).headers["set-cookie"].lower()


def test_a_tampered_session_cookie_is_no_session(client: TestClient) -> None:
    signed_in(client)
    cookie = client.cookies.get("digest_admin")
    assert cookie
    client.cookies.set("digest_admin", cookie[:-2] + "xx", path="/admin")
    answer = client.get("/admin/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/login"


def test_another_schools_pages_and_guessed_ids_are_403(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    csrf = signed_in(client)
    other_edition, missing_edition = week["s2"], week["s2"] + 100
    for path in (
        "/admin/schools/s2",
        "/admin/schools/nope",
        f"/admin/editions/{other_edition}",
        f"/admin/editions/{missing_edition}",
        "/admin/schools/s2/preview",
        "/admin/schools/s1/preview?guardian=q1",  # a guardian of s2 through s1's page
        "/admin/schools/s1/preview?guardian=nobody",
        f"/admin/schools/s1/preview?guardian=p1&edition={other_edition}",
        "/admin/audit?school=s2",
    ):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "a school you do not administer" in answer.text
        assert "Nieuws van De Regenboog" not in answer.text
    posts = {
        f"/admin/editions/{other_edition}/decide": {"decision": "hold"},
        "/admin/schools/s2/run": {},
        "/admin/schools/s1/preview/send": {"guardian": "q1"},
    }
    for path, form in posts.items():
        assert client.post(path, data={**form, "csrf": csrf}).status_code == 403, path
    assert edition_status(sessions, other_edition) is EditionStatus.PLANNED
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 2
    assert audit(sessions, "preview") == [] and audit(sessions, "send_test") == []
    home = client.get("/admin/").text
    assert "De Schakel" in home and "De Regenboog" not in home


def test_a_form_without_the_right_csrf_token_changes_nothing(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    csrf = signed_in(client)
    edition = f"/admin/editions/{week['s1']}/decide"
    tampered = csrf[:-1] + ("1" if csrf.endswith("0") else "0")  # never the token itself
    for form in ({"decision": "approve"}, {"decision": "approve", "csrf": tampered}):
        answer = client.post(edition, data=form)
        assert answer.status_code == 403 and "security token" in answer.text
    assert client.post("/admin/schools/s1/run", data={}).status_code == 403
    # Another session's token does not fit this session either.
    with TestClient(client.app) as other:
        assert other.post(edition, data={"decision": "approve", "csrf": csrf}).status_code == 403
    login_form = client.post("/admin/login", data={"email": ANNE, "password": ANNE_PASSWORD})
    assert login_form.status_code == 403
    assert edition_status(sessions, week["s1"]) is EditionStatus.AWAITING_APPROVAL
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 2
    assert client.post(edition, data={"decision": "approve", "csrf": csrf}).status_code == 200
    assert edition_status(sessions, week["s1"]) is EditionStatus.PLANNED


def test_repeated_failures_lock_the_account_and_the_client_in_every_process(
    sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    # Two application processes on one database count the same failures.
    with (
        TestClient(create_app(settings_for(), sessions)) as first,
        TestClient(create_app(settings_for(), sessions)) as second,
    ):
        for attempt in range(5):
            answer = log_in(first if attempt % 2 else second, ANNE, f"guess number {attempt}")
            assert answer.status_code == 401
        locked = log_in(first, ANNE, ANNE_PASSWORD)
        assert locked.status_code == 429
        assert "Too many failed logins. Try again in 15 minutes." in locked.text
        assert "digest_admin=" not in locked.headers.get("set-cookie", "")
        # The client is locked too: another account from the same address is refused.
        assert log_in(second, BOB, BOB_PASSWORD).status_code == 429
    assert audit(sessions, "login") == []


def test_a_lock_ends_after_its_time_and_keys_hold_no_addresses(
    sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    from digest.models import LoginThrottle

    keys = ThrottleKeys.of(ANNE, "192.0.2.7", secret="k")
    start = utcnow()
    with sessions() as session, session.begin():
        for n in range(5):
            at = start + n * (FAILURE_WINDOW / 10)
            assert authenticate(session, ANNE, "wrong", keys, at=at) is None
    with sessions() as session, session.begin():
        with pytest.raises(LoginLocked):
            authenticate(session, ANNE, ANNE_PASSWORD, keys, at=start + LOCK_TIME / 2)
        rows = session.scalars(select(LoginThrottle)).all()
        assert {row.failures for row in rows} == {5}
        assert not any("anne" in row.key or "192.0.2.7" in row.key for row in rows)
    with sessions() as session, session.begin():
        later = start + FAILURE_WINDOW + LOCK_TIME
        admin = authenticate(session, ANNE, ANNE_PASSWORD, keys, at=later)
        assert admin is not None and admin.email == ANNE


def test_a_disabled_administrators_session_stops_at_once(
    client: TestClient, sessions: sessionmaker[Session], db_url: str, week: dict[str, int]
) -> None:
    csrf = signed_in(client)
    assert client.get("/admin/schools/s1").status_code == 200
    result = CliRunner().invoke(
        main, ["admin", "disable", "--email", ANNE.upper()], env={"DIGEST_DATABASE_URL": db_url}
    )
    assert result.exit_code == 0, result.output
    assert f"administrator {ANNE} is disabled" in result.output
    page = client.get("/admin/schools/s1", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/admin/login"
    refused = client.post(
        f"/admin/editions/{week['s1']}/decide", data={"decision": "approve", "csrf": csrf}
    )
    assert refused.status_code == 403
    assert edition_status(sessions, week["s1"]) is EditionStatus.AWAITING_APPROVAL
    assert log_in(client, ANNE, ANNE_PASSWORD).status_code == 401


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = signed_in(client)
    old_cookie = client.cookies.get("digest_admin")
    assert client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False).status_code
    client.cookies.set("digest_admin", old_cookie or "", path="/admin")  # a copy kept elsewhere
    assert client.get("/admin/", follow_redirects=False).status_code == 303


# --- the pages ------------------------------------------------------------------------------


def test_the_edition_page_filters_and_shows_why_a_decision_is_refused(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    csrf = signed_in(client)
    edition = f"/admin/editions/{week['s1']}"
    page = client.get(edition).text
    assert "4 of 4 guardians" in page
    assert "queued 2, skipped:app 1, skipped:unreachable 1" in page
    only_app = client.get(f"{edition}?reason=app").text
    assert "1 of 4 guardians" in only_app
    assert 'data-guardian="p2"' in only_app and 'data-guardian="p1"' not in only_app
    queued = client.get(f"{edition}?status=queued").text
    assert 'data-guardian="p1"' in queued and 'data-guardian="p4"' in queued
    assert 'data-guardian="p3"' not in queued
    assert "0 of 4 guardians" in client.get(f"{edition}?status=failed").text
    with sessions() as session, session.begin():
        row = session.scalars(select(Delivery).where(Delivery.address == "p4@ouders.example")).one()
        row.status, row.last_reply = DeliveryStatus.FAILED, "550 5.1.1 no such user here"
    failed = client.get(f"{edition}?status=failed").text
    assert "550 5.1.1 no such user here" in failed and 'data-guardian="p4"' in failed

    client.post(f"{edition}/decide", data={"decision": "approve", "csrf": csrf})
    refused = client.post(f"{edition}/decide", data={"decision": "approve", "csrf": csrf})
    assert refused.status_code == 409
    assert f"edition {week['s1']} is planned: it cannot be approved" in refused.text
    assert "Approve</button>" not in refused.text and "Hold</button>" in refused.text


def test_the_school_page_lists_who_gets_nothing_and_lifts_a_suppression(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    with sessions() as session, session.begin():
        session.add(Suppression(address="p4@ouders.example", reason="550 5.1.1 unknown user"))
        session.add(Suppression(address="q1@ouders.example", reason="550 5.1.1 unknown user"))
        session.get_one(Guardian, "p1").opted_out_at = utcnow()
    csrf = signed_in(client)
    page = client.get("/admin/schools/s1").text
    unreachable = page.split("Unreachable guardians")[1].split("</section>")[0]
    assert "Kees Jansen" in unreachable and "Fatma" not in unreachable
    opted_out = page.split("Opted out")[1].split("</section>")[0]
    assert "Fatma Yilmaz" in opted_out and "p1@ouders.example" in opted_out
    suppressed = page.split("Suppressed addresses")[1].split("</section>")[0]
    assert "p4@ouders.example" in suppressed and "Lotte de Vries" in suppressed
    assert "q1@ouders.example" not in page  # the other school's guardian
    assert "awaiting_approval" in page and "queued 2" in page

    # Another school's suppressed address cannot be lifted from this school's page.
    other = client.post(
        "/admin/schools/s1/suppressions/lift", data={"address": "q1@ouders.example", "csrf": csrf}
    )
    assert other.status_code == 403
    lifted = client.post(
        "/admin/schools/s1/suppressions/lift", data={"address": "p4@ouders.example", "csrf": csrf}
    )
    assert (
        lifted.status_code == 200
        and "p4@ouders.example"
        not in lifted.text.split("Suppressed addresses")[1].split("</section>")[0]
    )
    with sessions() as session:
        assert {row.address for row in session.scalars(select(Suppression))} == {
            "q1@ouders.example"
        }
    events = audit(sessions, "suppression_lift")
    assert [(e.school_id, e.guardian_id, e.detail) for e in events] == [("s1", "p4", None)]


def test_run_now_makes_an_extra_edition_that_can_be_previewed(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    with sessions() as session, session.begin():
        published = utcnow() - timedelta(minutes=5)
        import_document(
            session,
            document(posts=[post("m9", "g5", published.isoformat(), title="Luizencontrole")]),
        )
    csrf = signed_in(client)
    answer = client.post("/admin/schools/s1/run", data={"csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    with sessions() as session:
        extra = session.scalars(select(Edition).where(Edition.kind == "extra")).one()
    assert answer.headers["location"] == f"/admin/editions/{extra.id}"
    page = client.get(answer.headers["location"]).text
    assert f"Edition {extra.id}: awaiting_approval" in page and "extra edition" in page
    shown = client.get(f"/admin/schools/s1/preview?guardian=p1&edition={extra.id}").text
    assert "Luizencontrole" in shown and "Excursie naar het bos" not in shown
    assert [e.edition_id for e in audit(sessions, "edition_run_now")] == [extra.id]


def test_preview_defaults_to_this_weeks_edition_and_is_audited(
    client: TestClient, sessions: sessionmaker[Session], week: dict[str, int]
) -> None:
    signed_in(client)
    form = client.get("/admin/schools/s1/preview")
    assert (
        form.status_code == 200 and "Fatma Yilmaz (p1)" in form.text and "<iframe" not in form.text
    )
    planned_week = CUTOFF.date().isoformat()
    shown = client.get(f"/admin/schools/s1/preview?guardian=p1&week={planned_week}")
    assert shown.status_code == 200
    assert "planned for this guardian: their mail, rendered exactly as sending" in shown.text
    assert "Excursie naar het bos" in shown.text  # in the text part and (escaped) the frame
    policy = shown.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script" not in policy
    assert shown.headers["cache-control"] == "no-store"
    upcoming = client.get("/admin/schools/s1/preview?guardian=p2").text
    assert "receives no newsletter (prefers app)" in upcoming
    assert "Excursie naar het bos" not in upcoming  # that post is in the planned edition
    assert client.get("/admin/schools/s1/preview?guardian=p1&week=soon").status_code == 400
    events = audit(sessions, "preview")
    assert [(e.school_id, e.guardian_id) for e in events] == [("s1", "p1"), ("s1", "p2")]
    log = client.get("/admin/audit").text
    assert "Fatma Yilmaz (p1)" in log and "preview" in log and ANNE in log


def test_a_refused_test_mail_says_why_and_is_not_recorded(
    sessions: sessionmaker[Session], week: dict[str, int], smtp_server: SmtpServer
) -> None:
    smtp_server.rcpt_replies = {ANNE: "550 5.1.1 mailbox unavailable"}
    app = create_app(settings_for(mail_url=smtp_server.url()), sessions)
    with TestClient(app) as client:
        csrf = signed_in(client)
        answer = client.post(
            "/admin/schools/s1/preview/send",
            data={"guardian": "p1", "week": CUTOFF.date().isoformat(), "csrf": csrf},
        )
    assert answer.status_code == 502
    assert "The test was not sent" in answer.text and "5.1.1" in answer.text
    assert smtp_server.messages == []
    assert audit(sessions, "send_test") == []


# --- the command line -----------------------------------------------------------------------


def run_cli(db_url: str, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=stdin, env={"DIGEST_DATABASE_URL": db_url})


def test_admin_create_reads_the_password_from_standard_input(
    engine: Engine, sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    with sessions() as session, session.begin():
        import_document(session, document(schools=[school("s1"), school("s2")]))
    created = run_cli(
        db_url,
        *("admin", "create", "--email", "Joke@School.example", "--school", "s1"),
        *("--school", "s2"),
        stdin="a long enough secret\nignored second line\n",
    )
    assert created.exit_code == 0, created.output
    assert "administrator joke@school.example created for s1, s2" in created.output
    for stdin, problem in (
        ("\n", "error: the password is empty"),
        ("short\n", "error: the password is too short: 5 characters, at least 10 are needed"),
    ):
        refused = run_cli(
            db_url, "admin", "create", "--email", "x@school.example", "--school", "s1", stdin=stdin
        )
        assert refused.exit_code == 1 and problem in refused.output
    unknown = run_cli(
        db_url,
        *("admin", "create", "--email", "x@school.example", "--school", "zz"),
        stdin="a long enough secret\n",
    )
    assert unknown.exit_code == 1 and 'error: unknown school "zz"' in unknown.output
    twice = run_cli(
        db_url,
        *("admin", "create", "--email", "JOKE@school.example", "--school", "s1"),
        stdin="a long enough secret\n",
    )
    assert twice.exit_code == 1 and "exists already" in twice.output
    assert run_cli(db_url, "admin", "disable", "--email", "nobody@x.example").exit_code == 1
    listed = run_cli(db_url, "admin", "list")
    assert listed.exit_code == 0
    line = next(row for row in listed.output.splitlines() if "joke@" in row)
    assert "active" in line and line.endswith("s1, s2")

    with TestClient(create_app(settings_for(), sessions)) as client:
        assert log_in(client, "joke@school.example", "a long enough secret").status_code == 303
        assert "ignored second line" not in client.get("/admin/").text
