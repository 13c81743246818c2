"""What every administrators' page needs: the session cookie, CSRF tokens, scoping, the layout.

A session is a signed cookie (its own salt) holding the account's id, its ``session_version`` and
the time it was issued; a disable or a logout bumps the version, so every cookie of the account
stops working at once. Every form carries a CSRF token: an HMAC of the session cookie (of a
pre-session cookie on the login form). Every page checks that the school it shows is one of the
administrator's; an id that does not exist gets the same 403 as another school's, so guessing
tells nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from digest.models import Admin, Edition, Guardian, School, utcnow
from digest.settings import Settings
from digest.web.pages import page

SESSION_COOKIE = "digest_admin"
LOGIN_COOKIE = "digest_admin_login"
SESSION_SALT = "admin-session"
NOT_YOURS = "This page belongs to a school you do not administer."
NOT_SIGNED_IN = "You are not logged in (or your session ended). Log in again at /admin/login."
BAD_TOKEN = (
    "The form's security token is missing or wrong: reload the page and try again. "
    "Nothing was changed."
)
# The admin pages load nothing from elsewhere and run no script; the preview's sandboxed
# srcdoc frame inherits this policy, so a mail's HTML cannot either (images: ours only).
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: {base}; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
DATE_FORMAT = "EEE d MMM y, HH:mm"
UI_LOCALE = "en_GB"  # the pages are in English; times are shown in the school's zone


def settings_of(request: Request) -> Settings:
    """The application's settings."""
    settings: Settings = request.app.state.settings
    return settings


def open_db(request: Request) -> Iterator[Session]:
    """A database session for one request."""
    with request.app.state.sessions() as session:
        yield session


Db = Annotated[Session, Depends(open_db)]


def sign(settings: Settings, purpose: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` for one ``purpose`` (a CSRF token), with the secret key."""
    key = settings.secret_key.encode()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def session_serializer(settings: Settings) -> URLSafeTimedSerializer:
    """Signs and checks session cookies; its salt is used for nothing else."""
    return URLSafeTimedSerializer(settings.secret_key, salt=SESSION_SALT)


@dataclass(frozen=True)
class Visit:
    """A logged-in administrator, the schools it may see, and its forms' CSRF token."""

    admin: Admin
    school_ids: frozenset[str]
    csrf: str


def current_visit(request: Request, session: Session) -> Visit | None:
    """The administrator of a valid session cookie, or None."""
    settings = settings_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    lifetime = settings.session_hours * 3600
    try:
        data = session_serializer(settings).loads(cookie, max_age=int(lifetime))
        admin_id, version, issued = int(data["a"]), int(data["v"]), float(data["t"])
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    if issued + lifetime < utcnow().timestamp():
        return None
    admin = session.get(Admin, admin_id)
    if admin is None or admin.disabled_at is not None or admin.session_version != version:
        return None
    return Visit(
        admin=admin,
        school_ids=frozenset(school.id for school in admin.schools),
        csrf=sign(settings, "csrf", cookie),
    )


def secure_cookies(request: Request) -> bool:
    """Cookies are ``Secure`` when the service is reached over https."""
    return settings_of(request).base_url.startswith("https://")


def posted_visit(request: Request, session: Session, csrf: str) -> Visit:
    """The visit behind a form: 403 when not logged in or when the CSRF token is not right."""
    visit = current_visit(request, session)
    if visit is None:
        raise HTTPException(403, NOT_SIGNED_IN)
    if not hmac.compare_digest(csrf.encode(), visit.csrf.encode()):
        raise HTTPException(403, BAD_TOKEN)
    return visit


def to_login(request: Request) -> RedirectResponse:
    """Where a page sends a visitor without a session."""
    return RedirectResponse("/admin/login", status_code=303)


def school_for(session: Session, visit: Visit, school_id: str) -> School:
    """The school, if it is one of the administrator's; else 403."""
    if school_id not in visit.school_ids:
        raise HTTPException(403, NOT_YOURS)
    return session.get_one(School, school_id)


def edition_for(session: Session, visit: Visit, edition_id: int) -> tuple[Edition, School]:
    """The edition and its school, if the school is the administrator's; else 403."""
    edition = session.get(Edition, edition_id)
    if edition is None or edition.school_id not in visit.school_ids:
        raise HTTPException(403, NOT_YOURS)
    return edition, session.get_one(School, edition.school_id)


def guardian_for(session: Session, school: School, guardian_id: str) -> Guardian:
    """A guardian of ``school``; any other id (or none) is a 403."""
    guardian = session.get(Guardian, guardian_id)
    if guardian is None or guardian.school_id != school.id:
        raise HTTPException(403, NOT_YOURS)
    return guardian


def admin_page(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    """``templates/web/admin/<name>``, in English, never cached, under the pages' strict CSP."""
    response = page(request, f"admin/{name}", {"lang": "en", **context}, status_code)
    response.headers["Content-Security-Policy"] = CSP.format(base=settings_of(request).base_url)
    response.headers["Cache-Control"] = "no-store"
    return response


def local_time(moment: datetime | None, zone: str) -> str:
    """A time as the pages show it, in ``zone`` ("Fri 27 Nov 2026, 16:00")."""
    if moment is None:
        return ""
    return format_datetime(moment, DATE_FORMAT, tzinfo=ZoneInfo(zone), locale=UI_LOCALE)
