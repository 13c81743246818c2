"""The parents' side of the web app, through HTTP: preferences, unsubscribe, images, gallery, .ics.

Links are taken from the mail as it is sent (or built by ``Links``, as the mail builds them);
the portal's images come from the media stand-in on 127.0.0.1, which counts what it is asked.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from fastapi.testclient import TestClient
from icalendar import Calendar
from itsdangerous import URLSafeSerializer
from media_standin import MediaStandIn, media_standin
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from web_parents_support import (
    WEEK_1,
    WEEK_2,
    delivery_of,
    guardian_row,
    list_unsubscribe_url,
    live_server,
    load,
    make_app,
    next_week_posts,
    outcome,
    rendered_mail,
    web_settings,
    week_document,
)

from digest.calendar import event_uid
from digest.db import make_engine, session_factory, upgrade
from digest.links import Links
from digest.models import Preference, SkipReason, utcnow
from digest.settings import Settings
from digest.web.media import mail_image, purge_media_cache
from scheduler.jobs import plan_latest


@pytest.fixture(scope="module")
def standin() -> Iterator[MediaStandIn]:
    with media_standin() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


@pytest.fixture
def week(sessions: sessionmaker[Session], standin: MediaStandIn) -> sessionmaker[Session]:
    load(sessions, week_document(standin.base_url))
    return sessions


@pytest.fixture
def client(settings: Settings, week: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(make_app(settings, week)) as test_client:
        yield test_client


def form_check(html: str) -> str:
    found = re.search(r'name="check" value="([0-9a-f]+)"', html)
    assert found, "the preferences form has no check value"
    return found.group(1)


def tampered(url: str) -> str:
    """The same link with one character of its signature changed."""
    last = url[-1]
    return url[:-1] + ("A" if last != "A" else "B")


# --- unsubscribe ---------------------------------------------------------------------------


def test_one_click_post_from_the_mail_header_opts_out_and_repeating_is_harmless(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    first = plan_latest(week, "s1", WEEK_1).edition
    mail = rendered_mail(week, settings, delivery_of(week, first.id, "p2").id)
    url = list_unsubscribe_url(mail)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    client.cookies.clear()
    answer = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert "U bent afgemeld" in answer.text
    assert "set-cookie" not in answer.headers
    opted_out_at = guardian_row(week, "p2").opted_out_at
    assert opted_out_at is not None

    # Some providers send the field as multipart/form-data (RFC 8058 allows both).
    again = client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert again.status_code == 200
    assert "U bent afgemeld" in again.text
    assert guardian_row(week, "p2").opted_out_at == opted_out_at  # the first time stands

    load(week, next_week_posts())
    second = plan_latest(week, "s1", WEEK_2).edition
    assert outcome(week, second.id, "p2").reason is SkipReason.OPTED_OUT
    assert outcome(week, second.id, "p1").reason is None  # the neighbour still gets it


def test_a_get_of_the_unsubscribe_link_only_shows_a_button(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    url = Links(settings).unsubscribe(["p2"])
    for _ in range(3):  # a link scanner, a preview pane, the parent
        page = client.get(url)
        assert page.status_code == 200
        assert re.search(r'<form method="post"', page.text)
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    row = guardian_row(week, "p2")
    assert (row.opted_out_at, row.local_choice_at) == (None, None)


def test_a_link_compressed_by_an_earlier_version_still_opens(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    # Links were once made by itsdangerous's own serializer, which zlib-compresses a payload
    # when that makes it shorter (a "." starts the token); a mail in an inbox may hold one.
    ids = ["p2", *(f"p2-{n:03d}-of-a-long-family" for n in range(12))]
    token = URLSafeSerializer(settings.secret_key, salt="unsubscribe").dumps(ids)
    assert token.startswith(".")
    assert Links(settings).open_unsubscribe(token) == sorted(ids)
    page = client.get(f"{settings.base_url}/u/{token}")
    assert page.status_code == 200
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    # Today's links for one address are the same tokens as before: nothing to compress.
    made = Links(settings).unsubscribe(["p2"]).rsplit("/", 1)[1]
    assert made == URLSafeSerializer(settings.secret_key, salt="unsubscribe").dumps(["p2"])


def test_a_post_without_the_one_click_field_changes_nothing(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    url = Links(settings).unsubscribe(["p2"])
    assert client.post(url, data={"List-Unsubscribe": "Yes"}).status_code == 400
    assert client.post(url, data={}).status_code == 400
    assert guardian_row(week, "p2").opted_out_at is None


# --- preferences ---------------------------------------------------------------------------


def test_preferences_change_what_the_next_plan_decides(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    first = plan_latest(week, "s1", WEEK_1).edition
    assert outcome(week, first.id, "p2").reason is None  # in a newsletter
    assert outcome(week, first.id, "p3").reason is SkipReason.APP

    for guardian_id, delivery, locale in (("p2", "app", "nl"), ("p3", "newsletter", "en")):
        url = Links(settings).preferences([guardian_id])
        form = client.get(url)
        assert form.status_code == 200
        saved = client.post(
            url, data={"delivery": delivery, "locale": locale, "check": form_check(form.text)}
        )
        assert saved.status_code == 200, saved.text
    assert "Saved" in saved.text  # p3 chose English: the confirmation is in English

    load(week, next_week_posts())
    second = plan_latest(week, "s1", WEEK_2).edition
    assert outcome(week, second.id, "p2").reason is SkipReason.APP
    assert outcome(week, second.id, "p3").reason is None
    assert delivery_of(week, second.id, "p3").locale == "en"


def test_choosing_a_delivery_again_ends_an_opt_out(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    links = Links(settings)
    client.post(links.unsubscribe(["p2"]), data={"List-Unsubscribe": "One-Click"})
    form = client.get(links.preferences(["p2"]))
    assert 'id="opted-out"' in form.text
    client.post(
        links.preferences(["p2"]),
        data={"delivery": "email", "locale": "nl", "check": form_check(form.text)},
    )
    row = guardian_row(week, "p2")
    assert row.opted_out_at is None
    assert row.local_delivery is Preference.EMAIL


def test_the_app_is_not_offered_without_a_portal_account(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    url = Links(settings).preferences(["p1"])
    form = client.get(url)
    assert 'value="app"' not in form.text
    refused = client.post(
        url, data={"delivery": "app", "locale": "nl", "check": form_check(form.text)}
    )
    assert refused.status_code == 400
    assert guardian_row(week, "p1").local_choice_at is None


def test_tampered_links_and_forged_forms_change_nothing(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    links = Links(settings)
    good = links.preferences(["p2"])
    check = form_check(client.get(good).text)
    choice = {"delivery": "app", "locale": "en", "check": check}

    assert client.get(tampered(good)).status_code == 404
    assert client.post(tampered(good), data=choice).status_code == 404
    # Another parent's link signed for another purpose opens nothing either.
    assert client.get(good.replace("/p/", "/u/")).status_code == 404
    unsubscribe = links.unsubscribe(["p2"])
    refused = client.post(tampered(unsubscribe), data={"List-Unsubscribe": "One-Click"})
    assert refused.status_code == 404
    assert "niets veranderd" in refused.text
    # The right link with a form that did not come from our page.
    forged = client.post(good, data={**choice, "check": "0" * 64})
    assert forged.status_code == 403
    p3_check = form_check(client.get(links.preferences(["p3"])).text)
    other = client.post(good, data={**choice, "check": p3_check})
    assert other.status_code == 403

    row = guardian_row(week, "p2")
    assert (row.local_choice_at, row.local_delivery, row.opted_out_at) == (None, None, None)


def test_expired_links_are_a_410(client: TestClient, settings: Settings) -> None:
    links = Links(settings)
    with time_machine.travel(utcnow() - timedelta(days=settings.media_link_days + 1)):
        old = [links.media("f2"), links.gallery("m1"), links.event("m3")]
    for url in old:
        answer = client.get(url)
        assert answer.status_code == 410, url
        assert "verlopen" in answer.text


# --- images --------------------------------------------------------------------------------


def test_an_image_is_served_mail_sized_and_cached(
    client: TestClient, week: sessionmaker[Session], settings: Settings, standin: MediaStandIn
) -> None:
    first = plan_latest(week, "s1", WEEK_1).edition
    mail = rendered_mail(week, settings, delivery_of(week, first.id, "p1").id)
    html = mail.get_body(("html",)).get_content()
    images = re.findall(r'<img[^>]+src="(http://testserver/media/[^"]+)"', html)
    assert images, "the mail shows no photo"

    asked = len(standin.requested)
    answer = client.get(images[0])
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["cache-control"].startswith("private")
    with Image.open(io.BytesIO(answer.content)) as shown:
        assert shown.size == (600, 450)  # the stand-in's 1200 × 900, halved
    assert len(standin.requested) == asked + 1

    again = client.get(images[0])
    assert again.content == answer.content
    assert len(standin.requested) == asked + 1  # from the cache


def test_a_withdrawn_consent_stops_the_image_at_the_next_view(
    client: TestClient, week: sessionmaker[Session], settings: Settings, standin: MediaStandIn
) -> None:
    url = Links(settings).media("f1")  # c1 is in it
    assert client.get(url).status_code == 200
    cache = Path(settings.media_cache_dir)
    assert list(cache.iterdir())

    load(week, week_document(standin.base_url, c1_consent="portal"))
    refused = client.get(url)
    assert refused.status_code == 403
    assert "toestemming" in refused.text
    assert not list(cache.glob("*.jpg"))  # the copy went too
    assert client.get(Links(settings).media("f2")).status_code == 200  # nobody in it


def test_an_image_never_allowed_is_refused(client: TestClient, settings: Settings) -> None:
    assert client.get(Links(settings).media("f8")).status_code == 403  # c3: portal only


def test_an_unreachable_portal_is_a_502_page(
    client: TestClient, week: sessionmaker[Session], settings: Settings, standin: MediaStandIn
) -> None:
    doc = week_document(standin.base_url)
    doc["posts"][0]["media"][1]["url"] = "http://127.0.0.1:9/gone.jpg"  # discard: refused
    doc["posts"][0]["media"][2]["url"] = f"{standin.base_url}/elsewhere/f3.jpg"  # a 404 there
    load(week, doc)
    for media_id in ("f2", "f3"):
        answer = client.get(Links(settings).media(media_id))
        assert answer.status_code == 502
        assert "text/html" in answer.headers["content-type"]


def test_the_cache_is_bounded_and_purged(tmp_path: Path, standin: MediaStandIn) -> None:
    settings = web_settings(tmp_path, media_cache_mb=1)
    cache = Path(settings.media_cache_dir)
    sizes = []
    for n in range(12):
        image = mail_image(settings, f"x{n}", f"{standin.base_url}/noise/x{n}.jpg")
        sizes.append(len(image.body))
    total = sum(path.stat().st_size for path in cache.iterdir())
    assert sum(sizes) > 1024 * 1024, "the test needs more than the limit"
    assert total <= 1024 * 1024
    kept = len(list(cache.iterdir()))
    assert 0 < kept < 12
    asked = len(standin.requested)
    assert mail_image(settings, "x11", f"{standin.base_url}/noise/x11.jpg").from_cache
    assert len(standin.requested) == asked
    assert not mail_image(settings, "x0", f"{standin.base_url}/noise/x0.jpg").from_cache
    kept = len(list(cache.iterdir()))

    assert purge_media_cache(settings, utcnow() - timedelta(days=1)) == 0
    assert purge_media_cache(settings, utcnow() + timedelta(seconds=1)) == kept
    assert not list(cache.iterdir())


# --- gallery and calendar ------------------------------------------------------------------


def test_the_gallery_shows_the_photos_consent_allows(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    first = plan_latest(week, "s1", WEEK_1).edition
    mail = rendered_mail(week, settings, delivery_of(week, first.id, "p1").id)
    html = mail.get_body(("html",)).get_content()
    galleries = set(re.findall(r'href="(http://testserver/gallery/[^"]+)"', html))
    assert len(galleries) == 1

    page = client.get(galleries.pop())
    assert page.status_code == 200
    images = re.findall(r'<img src="(http://testserver/media/[^"]+)"', page.text)
    assert len(images) == 7  # f8 shows c3, who allows no photos in mail
    assert 'id="withheld"' in page.text
    assert client.get(images[-1]).status_code == 200


def test_the_event_link_gives_the_mails_calendar_entry(
    client: TestClient, week: sessionmaker[Session], settings: Settings
) -> None:
    first = plan_latest(week, "s1", WEEK_1).edition
    mail = rendered_mail(week, settings, delivery_of(week, first.id, "p2").id)
    html = mail.get_body(("html",)).get_content()
    links = set(re.findall(r'href="(http://testserver/ics/[^"]+\.ics)"', html))
    assert len(links) == 1

    answer = client.get(links.pop())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(answer.content)
    (entry,) = calendar.walk("VEVENT")
    assert str(entry["uid"]) == event_uid("m3", settings.mail_domain)
    assert str(entry["summary"]) == "Sinterklaas op school"
    assert entry.decoded("dtstart").isoformat() == "2026-12-05T09:00:00+01:00"

    attached = next(p for p in mail.iter_attachments() if p.get_content_type() == "text/calendar")
    (mailed,) = Calendar.from_ical(attached.get_content()).walk("VEVENT")
    assert mailed["uid"] == entry["uid"]


def test_no_event_or_a_deleted_post_is_gone(
    client: TestClient, week: sessionmaker[Session], settings: Settings, standin: MediaStandIn
) -> None:
    links = Links(settings)
    assert client.get(links.event("m2")).status_code == 410  # no event
    doc = week_document(standin.base_url)
    doc["posts"][0]["deleted_at"] = "2026-11-25T08:00:00+01:00"
    load(week, doc)
    assert client.get(links.gallery("m1")).status_code == 410
    assert client.get(links.media("f2")).status_code == 410


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from mail_browser import launch_chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def site(
    settings: Settings, tmp_path: Path, standin: MediaStandIn
) -> Iterator[tuple[sessionmaker[Session], Settings]]:
    """The app on a real port, on SQLite only: the store's side is covered on both above."""
    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    load(sessions, week_document(standin.base_url))
    app = make_app(settings, sessions)
    with live_server(app):
        yield sessions, app.state.settings
    engine.dispose()


def test_a_parent_changes_preferences_in_chromium(browser: Any, site: Any) -> None:
    sessions, settings = site
    context = browser.new_context()
    page = context.new_page()
    page.goto(Links(settings).preferences(["p2"]))
    assert page.locator("h1").inner_text() == "Hoe wilt u het nieuws ontvangen?"
    assert page.locator('input[name="delivery"][value="newsletter"]').is_checked()
    page.get_by_label("Een e-mail per bericht").check()
    page.get_by_label("English").check()
    page.get_by_role("button", name="Opslaan").click()
    page.wait_for_selector("#saved")
    assert "one email per post" in page.locator("#saved").inner_text()
    assert page.locator("html").get_attribute("lang") == "en"
    row = guardian_row(sessions, "p2")
    assert (row.local_delivery, row.local_locale) == (Preference.EMAIL, "en")
    assert context.cookies() == []
    context.close()


def test_a_parent_confirms_the_unsubscribe_in_chromium(browser: Any, site: Any) -> None:
    sessions, settings = site
    context = browser.new_context()
    page = context.new_page()
    page.goto(Links(settings).unsubscribe(["p2"]))
    assert guardian_row(sessions, "p2").opted_out_at is None  # the visit alone changed nothing
    page.get_by_role("button", name="Afmelden").click()
    page.wait_for_selector("#unsubscribed")
    assert guardian_row(sessions, "p2").opted_out_at is not None
    page.goto(Links(settings).unsubscribe(["p2"]))
    assert page.locator("#already").is_visible()
    context.close()
