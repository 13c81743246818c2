"""The parents' side, reached only from links in the mails: every path carries a signed token.

- ``/p/<token>``: how the guardians of one address want the news, and in which language.
- ``/u/<token>``: one-click unsubscribe (RFC 8058). Only a POST changes anything; a GET shows a
  button, so a link scanner that follows every link unsubscribes nobody.
- ``/media/<token>``, ``/gallery/<token>``, ``/ics/<token>.ics``: an image, a post's further
  photos, an event; the children's consent is checked again at every view.

A tampered token is a 404 page, an expired one a 410 page; neither changes anything. No cookie
is ever set or read here: the token in the path is the capability.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from digest.calendar import attachment_name, event_calendar
from digest.compose import LANGUAGES, mail_language, may_mail, post_content
from digest.content import SchoolInfo
from digest.links import LinkExpired, LinkInvalid, Links
from digest.models import Guardian, Media, MediaType, Post, Preference, School, utcnow
from digest.plan import effective_preference
from digest.settings import Settings
from digest.web.media import MediaUnavailable, forget_image, mail_image
from digest.web.pages import error_page, page

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Images are checked against consent at every view: a browser may keep one for a few minutes,
# not longer, so a withdrawn consent soon stops every copy we control.
IMAGE_CACHE_CONTROL = "private, max-age=300"
NO_STORE = "no-store"

WORDING: dict[str, dict[str, str]] = {
    "nl": {
        "invalid": "Deze link klopt niet (misschien is hij niet helemaal gekopieerd). Er is "
        "niets veranderd. Gebruik de link in de laatste e-mail van school.",
        "expired": "Deze link is verlopen. Er is niets veranderd. De nieuwste e-mail van "
        "school heeft een nieuwe link.",
        "gone": "Dit is niet meer beschikbaar.",
        "no_consent": "Deze foto wordt niet meer getoond: niet alle ouders van de kinderen "
        "erop geven toestemming voor foto's in e-mail.",
        "unreachable": "De foto kan nu niet worden opgehaald. Probeer het later nog eens.",
        "no_guardian": "Deze link hoort bij een ouder die niet meer bij de school staat "
        "ingeschreven. Er is niets veranderd.",
        "tampered_form": "Dit formulier komt niet van onze pagina. Er is niets veranderd. Open "
        "de link uit de e-mail opnieuw.",
        "no_app": "De app is er alleen voor ouders met een account in het portaal.",
        "preferences_title": "Hoe wilt u het nieuws ontvangen?",
        "preferences_intro": "Het nieuws van {school} voor {names}.",
        "opted_out_now": "U bent afgemeld: u krijgt nu geen e-mail van ons. Kies hieronder "
        "hoe u het nieuws weer wilt ontvangen.",
        "delivery": "Manier",
        "app": "In de app van het portaal (geen e-mail van ons)",
        "email": "Een e-mail per bericht, kort nadat het geplaatst is",
        "newsletter": "Eén nieuwsbrief per week met al het nieuws",
        "language": "Taal",
        "save": "Opslaan",
        "saved_title": "Opgeslagen",
        "saved": "Vanaf nu: {choice}. Taal: {language}.",
        "saved_floor": "Zonder account in het portaal krijgt u de wekelijkse nieuwsbrief.",
        "change_again": "Nog iets wijzigen",
        "unsubscribe_title": "Afmelden",
        "unsubscribe_intro": "Wilt u geen e-mail meer van {school}? U krijgt dan geen "
        "nieuwsbrief en geen e-mail per bericht meer.",
        "unsubscribe_button": "Afmelden",
        "unsubscribed_title": "U bent afgemeld",
        "unsubscribed": "U krijgt geen e-mail meer van {school}. De school ziet dat u bent "
        "afgemeld.",
        "already_unsubscribed": "U bent al afgemeld: u krijgt geen e-mail van {school}.",
        "resubscribe": "Toch weer e-mail ontvangen? Kies hier hoe.",
        "gallery_title": "Foto's: {title}",
        "gallery_withheld": "{count} foto('s) staan alleen in het portaal: niet alle ouders "
        "geven toestemming voor foto's in e-mail.",
        "gallery_portal": "Bekijk het bericht in het portaal",
        "gallery_video": "Video: bekijk in het portaal",
    },
    "en": {
        "invalid": "This link is not right (perhaps it was not copied whole). Nothing has "
        "changed. Please use the link in the school's latest email.",
        "expired": "This link has expired. Nothing has changed. The school's latest email has "
        "a new link.",
        "gone": "This is no longer available.",
        "no_consent": "This photo is no longer shown: not every parent of the children in it "
        "allows photos in email.",
        "unreachable": "The photo cannot be fetched right now. Please try again later.",
        "no_guardian": "This link belongs to a parent who is no longer registered at the "
        "school. Nothing has changed.",
        "tampered_form": "This form did not come from our page. Nothing has changed. Please "
        "open the link from the email again.",
        "no_app": "The app is only for parents with an account in the portal.",
        "preferences_title": "How would you like to receive the news?",
        "preferences_intro": "News from {school} for {names}.",
        "opted_out_now": "You are unsubscribed: we send you no email now. Choose below how "
        "you would like to receive the news again.",
        "delivery": "How",
        "app": "In the portal's app (no email from us)",
        "email": "One email per post, shortly after it is posted",
        "newsletter": "One weekly newsletter with all the news",
        "language": "Language",
        "save": "Save",
        "saved_title": "Saved",
        "saved": "From now on: {choice}. Language: {language}.",
        "saved_floor": "Without an account in the portal you get the weekly newsletter.",
        "change_again": "Change something else",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_intro": "No more email from {school}? You will then get no newsletter "
        "and no email per post.",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed": "You will get no more email from {school}. The school can see that you "
        "unsubscribed.",
        "already_unsubscribed": "You are already unsubscribed: you get no email from {school}.",
        "resubscribe": "Want email after all? Choose how here.",
        "gallery_title": "Photos: {title}",
        "gallery_withheld": "{count} photo(s) are only in the portal: not every parent allows "
        "photos in email.",
        "gallery_portal": "See the post in the portal",
        "gallery_video": "Video: watch in the portal",
    },
}
LANGUAGE_NAMES = {"nl": "Nederlands", "en": "English"}


# --- shared helpers --------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session(request: Request) -> Session:
    session: Session = request.app.state.sessions()
    return session


def _refused(request: Request, exc: Exception, language: str = "nl") -> HTMLResponse:
    if isinstance(exc, LinkExpired):
        response = error_page(request, 410, WORDING[language]["expired"], lang=language)
    else:
        response = error_page(request, 404, WORDING[language]["invalid"], lang=language)
    response.headers["Cache-Control"] = NO_STORE
    return response


def _message(request: Request, status: int, language: str, key: str) -> HTMLResponse:
    response = error_page(request, status, WORDING[language][key], lang=language)
    response.headers["Cache-Control"] = NO_STORE
    return response


def form_check(settings: Settings, token: str) -> str:
    """The hidden value of the preferences form: only our page, holding the link, has it."""
    key = hashlib.sha256(f"preferences-form\0{settings.secret_key}".encode()).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def _guardians(session: Session, ids: Sequence[str]) -> list[Guardian]:
    return list(session.scalars(select(Guardian).where(Guardian.id.in_(ids)).order_by(Guardian.id)))


def _language(guardians: Sequence[Guardian], school: School | None) -> str:
    """The page's language: the guardians' common one, else the school's, else Dutch."""
    school_locale = school.locale if school else "nl"
    chosen = {mail_language(effective_preference(g)[2], school_locale) for g in guardians}
    return chosen.pop() if len(chosen) == 1 else mail_language(None, school_locale)


def _school_of(session: Session, guardians: Sequence[Guardian]) -> School | None:
    return session.get(School, guardians[0].school_id) if guardians else None


def _addressees(
    session: Session, ids: Sequence[str]
) -> tuple[list[Guardian], School | None, str] | None:
    """The guardians a link names, their school and the page's language; None when gone."""
    guardians = _guardians(session, ids)
    if not guardians:
        return None
    school = _school_of(session, guardians)
    return guardians, school, _language(guardians, school)


def _names(guardians: Sequence[Guardian], language: str) -> str:
    names = [g.name for g in guardians]
    if len(names) < 2:
        return "".join(names)
    joiner = " en " if language == "nl" else " and "
    return ", ".join(names[:-1]) + joiner + names[-1]


def _page(request: Request, name: str, language: str, **context: Any) -> HTMLResponse:
    response = page(
        request, f"parents/{name}", {"lang": language, "t": WORDING[language], **context}
    )
    response.headers["Cache-Control"] = NO_STORE
    return response


# --- preferences -------------------------------------------------------------------------------


@router.get("/p/{token}")
def preferences_page(request: Request, token: str) -> Response:
    """The form: how the news reaches the guardians of this address, and in which language."""
    settings = _settings(request)
    try:
        ids = Links(settings).open_preferences(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session:
        found = _addressees(session, ids)
        if found is None:
            return _message(request, 404, "nl", "no_guardian")
        guardians, school, language = found
        return _preferences_form(request, settings, token, guardians, school, language)


def _preferences_form(
    request: Request,
    settings: Settings,
    token: str,
    guardians: Sequence[Guardian],
    school: School | None,
    language: str,
    status_code: int = 200,
    problem: str | None = None,
) -> HTMLResponse:
    preference, opted_out, _ = effective_preference(guardians[0])
    response = _page(
        request,
        "preferences.html",
        language,
        school=school.name if school else "",
        names=_names(guardians, language),
        choices=_choices(guardians),
        current=preference.value,
        opted_out=opted_out,
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        current_language=language,
        check=form_check(settings, token),
        problem=problem,
    )
    response.status_code = status_code
    return response


def _choices(guardians: Sequence[Guardian]) -> list[str]:
    # The app needs a portal account: without one the newsletter is the floor (plan's rule).
    with_app = any(g.portal_account for g in guardians)
    return [p.value for p in Preference if p is not Preference.APP or with_app]


@router.post("/p/{token}")
def save_preferences(
    request: Request,
    token: str,
    delivery: Annotated[str, Form()],
    locale: Annotated[str, Form()],
    check: Annotated[str, Form()],
) -> Response:
    """Save the choice as the guardians' local choice, now; choosing again ends an opt-out."""
    settings = _settings(request)
    try:
        ids = Links(settings).open_preferences(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session, session.begin():
        found = _addressees(session, ids)
        if found is None:
            return _message(request, 404, "nl", "no_guardian")
        guardians, school, language = found
        if not hmac.compare_digest(check.encode(), form_check(settings, token).encode()):
            return _message(request, 403, language, "tampered_form")
        if delivery not in _choices(guardians) or locale not in LANGUAGES:
            problem = WORDING[language]["no_app"] if delivery == Preference.APP.value else None
            return _preferences_form(
                request, settings, token, guardians, school, language, 400, problem
            )
        chosen = Preference(delivery)
        now = utcnow()
        changed = [g for g in guardians if _record_choice(g, chosen, locale, now)]
        if changed:
            log.info("preferences saved for guardians %s", ",".join(g.id for g in changed))
        floor = chosen is Preference.APP and not all(g.portal_account for g in guardians)
        words = WORDING[locale]
        return _page(
            request,
            "saved.html",
            locale,
            message=words["saved"].format(
                choice=words[chosen.value].lower(), language=LANGUAGE_NAMES[locale]
            ),
            floor=words["saved_floor"] if floor else None,
            back=Links(settings).preferences(ids),
        )


def _local_wins(guardian: Guardian) -> bool:
    # digest.plan.effective_preference's rule: a local choice stands until the portal's is newer.
    return guardian.local_choice_at is not None and (
        guardian.preferences_updated_at is None
        or guardian.local_choice_at >= guardian.preferences_updated_at
    )


def _record_choice(guardian: Guardian, delivery: Preference, locale: str, now: datetime) -> bool:
    """Set the local choice; False when it is already the choice in force (no new time)."""
    if (
        _local_wins(guardian)
        and guardian.opted_out_at is None
        and guardian.local_delivery is delivery
        and guardian.local_locale == locale
    ):
        return False
    guardian.local_delivery = delivery
    guardian.local_locale = locale
    guardian.local_choice_at = now
    guardian.opted_out_at = None
    return True


# --- unsubscribe (RFC 8058) ----------------------------------------------------------------------


@router.get("/u/{token}")
def unsubscribe_page(request: Request, token: str) -> Response:
    """A confirm button only: following the link changes nothing."""
    settings = _settings(request)
    try:
        ids = Links(settings).open_unsubscribe(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session:
        found = _addressees(session, ids)
        if found is None:
            return _message(request, 404, "nl", "no_guardian")
        guardians, school, language = found
        done = all(effective_preference(g)[1] for g in guardians)
        return _page(
            request,
            "unsubscribe.html",
            language,
            school=school.name if school else "",
            done=done,
            preferences_url=Links(settings).preferences(ids),
        )


@router.post("/u/{token}")
def unsubscribe(
    request: Request,
    token: str,
    one_click: Annotated[str, Form(alias="List-Unsubscribe")],
) -> Response:
    """RFC 8058's one-click POST (and our own confirm button): opt out; again is harmless."""
    settings = _settings(request)
    try:
        ids = Links(settings).open_unsubscribe(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    if one_click != "One-Click":
        return _message(request, 400, "nl", "invalid")
    with _session(request) as session, session.begin():
        found = _addressees(session, ids)
        if found is None:
            return _message(request, 404, "nl", "no_guardian")
        guardians, school, language = found
        now = utcnow()
        changed = [g for g in guardians if _opt_out(g, now)]
        if changed:
            log.info("guardians %s opted out", ",".join(g.id for g in changed))
        return _page(
            request,
            "unsubscribed.html",
            language,
            school=school.name if school else "",
            preferences_url=Links(settings).preferences(ids),
        )


def _opt_out(guardian: Guardian, now: datetime) -> bool:
    """Opt out as a local choice; False when an opt-out is already in force."""
    if _local_wins(guardian) and guardian.opted_out_at is not None:
        return False
    if not _local_wins(guardian):
        # An older local choice lost to the portal: it must not come back with the opt-out.
        guardian.local_delivery = None
        guardian.local_locale = None
    guardian.opted_out_at = now
    guardian.local_choice_at = now
    return True


# --- images, galleries, events ------------------------------------------------------------------


def _live_post(session: Session, post_id: str) -> Post | None:
    return session.scalars(
        select(Post)
        .where(Post.id == post_id, Post.deleted_at.is_(None), Post.published_at.is_not(None))
        .options(selectinload(Post.media).selectinload(Media.children), selectinload(Post.event))
    ).first()


def _post_language(session: Session, post: Post) -> str:
    school = session.get(School, post.school_id)
    return mail_language(None, school.locale if school else "nl")


@router.get("/media/{token}")
def media(request: Request, token: str) -> Response:
    """One image, mail-sized, while every child in it still allows photos in mail."""
    settings = _settings(request)
    try:
        media_id = Links(settings).open_media(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session:
        item = session.scalars(
            select(Media).where(Media.id == media_id).options(selectinload(Media.children))
        ).first()
        post = _live_post(session, item.post_id) if item else None
        if item is None or post is None:
            return _message(request, 410, "nl", "gone")
        language = _post_language(session, post)
        source = item.url if item.type is MediaType.IMAGE else item.poster_url
        if not source:
            return _message(request, 410, language, "gone")
        if not may_mail(item):
            # The copy we kept is no longer ours to keep either.
            forget_image(settings, media_id, source)
            log.info("media %s refused: consent withdrawn", media_id)
            return _message(request, 403, language, "no_consent")
    try:
        image = mail_image(settings, media_id, source)
    except MediaUnavailable as exc:
        log.warning("media %s not served: %s", media_id, exc.problem)
        return _message(request, 502, language, "unreachable")
    return Response(
        image.body,
        media_type=image.content_type,
        headers={"Cache-Control": IMAGE_CACHE_CONTROL},
    )


@router.get("/gallery/{token}")
def gallery(request: Request, token: str) -> Response:
    """Every photo of a post that consent allows, each through its own signed /media/ link."""
    settings = _settings(request)
    links = Links(settings)
    try:
        post_id = links.open_gallery(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session:
        post = _live_post(session, post_id)
        if post is None:
            return _message(request, 410, "nl", "gone")
        language = _post_language(session, post)
        content = post_content(post, links)  # the mail's own rule, decided now
        words = WORDING[language]
        return _page(
            request,
            "gallery.html",
            language,
            title=words["gallery_title"].format(title=post.title),
            photos=content.photos,
            withheld=(
                words["gallery_withheld"].format(count=content.withheld_photos)
                if content.withheld_photos
                else None
            ),
            portal_url=post.url,
        )


@router.get("/ics/{token}.ics")
def event(request: Request, token: str) -> Response:
    """One event as a calendar file: the same entry (UID) as the mail's attachment."""
    settings = _settings(request)
    links = Links(settings)
    try:
        post_id = links.open_event(token)
    except (LinkInvalid, LinkExpired) as exc:
        return _refused(request, exc)
    with _session(request) as session:
        post = _live_post(session, post_id)
        if post is None or post.event is None:
            return _message(request, 410, "nl", "gone")
        school = session.get_one(School, post.school_id)
        language = mail_language(None, school.locale)
        info = SchoolInfo(
            id=school.id,
            name=school.name,
            timezone=school.timezone,
            reply_to=school.reply_to,
            portal_url=school.portal_url,
        )
        ics = event_calendar(post_content(post, links), info, settings, now=utcnow())
    return Response(
        ics,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{attachment_name(language)}"',
            "Cache-Control": NO_STORE,
        },
    )
