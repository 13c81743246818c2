"""The administrators' pages: login, schools, editions (approval, run now), the audit log.

Sessions, CSRF and scoping are in ``admin_session``; preview as a parent in ``admin_preview``,
whose routes this router includes (the application includes this one).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from digest.admins import LoginLocked, ThrottleKeys, authenticate
from digest.editions import ALLOWED, Decision, DecisionRefused, decide, run_now
from digest.errors import DigestError
from digest.models import (
    Admin,
    Alert,
    AuditEvent,
    DeliveryStatus,
    Edition,
    Guardian,
    School,
    SkipReason,
    Suppression,
    utcnow,
)
from digest.status import edition_counts, edition_status, summarize
from digest.suppressions import remove_suppression
from digest.web import admin_preview
from digest.web.admin_session import (
    BAD_TOKEN,
    LOGIN_COOKIE,
    NOT_YOURS,
    SESSION_COOKIE,
    Db,
    Visit,
    admin_page,
    current_visit,
    edition_for,
    local_time,
    posted_visit,
    school_for,
    secure_cookies,
    session_serializer,
    settings_of,
    sign,
    to_login,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin")
router.include_router(admin_preview.router)

STATUSES = [status.value for status in DeliveryStatus]
REASONS = [reason.value for reason in SkipReason]


# --- login and logout -----------------------------------------------------------------------


def _login_form(request: Request, *, error: str | None = None, status_code: int = 200) -> Response:
    settings = settings_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = admin_page(
        request,
        "login.html",
        {"title": "Log in", "csrf": sign(settings, "login", nonce), "error": error},
        status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=86400,
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
    return response


@router.get("/login")
def login_page(request: Request, session: Db) -> Response:
    """The login form (already logged in: the schools)."""
    if current_visit(request, session) is not None:
        return RedirectResponse("/admin/", status_code=303)
    return _login_form(request)


@router.post("/login")
def login(
    request: Request,
    session: Db,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Check the password (throttled per account and per client); start a session."""
    settings = settings_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf, sign(settings, "login", nonce)):
        raise HTTPException(403, BAD_TOKEN)
    now = utcnow()
    client = request.client.host if request.client else "unknown"
    keys = ThrottleKeys.of(email, client, secret=settings.secret_key)
    try:
        admin = authenticate(session, email, password, keys, at=now)
    except LoginLocked as locked:
        session.commit()
        minutes = max(1, round((locked.until - now).total_seconds() / 60))
        message = f"Too many failed logins. Try again in {minutes} minutes."
        log.warning("admin login refused: throttled")
        return _login_form(request, error=message, status_code=429)
    if admin is None:
        session.commit()  # the failure counts
        log.info("admin login failed")
        return _login_form(
            request, error="The e-mail address or the password is wrong.", status_code=401
        )
    session.add(AuditEvent(at=now, admin_id=admin.id, action="login"))
    session.commit()
    log.info("admin %s logged in", admin.id)
    cookie = session_serializer(settings).dumps(
        {"a": admin.id, "v": admin.session_version, "t": int(now.timestamp())}
    )
    response = RedirectResponse("/admin/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(settings.session_hours * 3600),
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


@router.post("/logout")
def logout(request: Request, session: Db, csrf: Annotated[str, Form()] = "") -> Response:
    """End every session of this account (the version in their cookies no longer matches)."""
    visit = posted_visit(request, session, csrf)
    visit.admin.session_version += 1
    session.add(AuditEvent(at=utcnow(), admin_id=visit.admin.id, action="logout"))
    session.commit()
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# --- schools and editions -------------------------------------------------------------------


@router.get("/")
def schools(request: Request, session: Db) -> Response:
    """The administrator's schools."""
    visit = current_visit(request, session)
    if visit is None:
        return to_login(request)
    rows = sorted(visit.admin.schools, key=lambda school: school.name)
    open_alerts = dict(
        session.execute(
            select(Alert.school_id, func.count())
            .where(Alert.resolved_at.is_(None))
            .group_by(Alert.school_id)
        ).all()
    )
    return admin_page(
        request,
        "schools.html",
        {"title": "Schools", "visit": visit, "schools": rows, "alerts": open_alerts},
    )


@router.get("/schools/{school_id}")
def school_page(request: Request, session: Db, school_id: str) -> Response:
    """A school's editions and the lists that need an eye: unreachable, opted out, suppressed."""
    visit = current_visit(request, session)
    if visit is None:
        return to_login(request)
    school = school_for(session, visit, school_id)
    editions = list(
        session.scalars(
            select(Edition)
            .where(Edition.school_id == school.id)
            .order_by(Edition.cutoff.desc())
            .limit(60)
        )
    )
    counts = edition_counts(session, [edition.id for edition in editions])
    guardians = select(Guardian).where(Guardian.school_id == school.id).order_by(Guardian.name)
    unreachable = session.scalars(
        guardians.where(or_(Guardian.email.is_(None), Guardian.email == ""))
    ).all()
    opted_out = session.scalars(guardians.where(Guardian.opted_out_at.is_not(None))).all()
    suppressed: dict[str, tuple[Suppression, list[Guardian]]] = {}
    for row, guardian in session.execute(
        select(Suppression, Guardian)
        .join(Guardian, func.lower(Guardian.email) == Suppression.address)
        .where(Guardian.school_id == school.id)
        .order_by(Suppression.address, Guardian.name)
    ).all():
        suppressed.setdefault(row.address, (row, []))[1].append(guardian)
    alerts = session.scalars(
        select(Alert)
        .where(
            Alert.resolved_at.is_(None),
            or_(Alert.school_id == school.id, Alert.school_id.is_(None)),
        )
        .order_by(Alert.created_at.desc())
    ).all()
    return admin_page(
        request,
        "school.html",
        {
            "title": school.name,
            "visit": visit,
            "school": school,
            "editions": editions,
            "counts": counts,
            "unreachable": unreachable,
            "opted_out": opted_out,
            "suppressed": list(suppressed.values()),
            "alerts": alerts,
            "when": lambda moment: local_time(moment, school.timezone),
        },
    )


@router.get("/editions/{edition_id}")
def edition_page(
    request: Request,
    session: Db,
    edition_id: int,
    status: str = "",
    reason: str = "",
) -> Response:
    """Every guardian the plan considered, filterable by ``status`` and ``reason``."""
    visit = current_visit(request, session)
    if visit is None:
        return to_login(request)
    edition, school = edition_for(session, visit, edition_id)
    return _edition_view(request, session, visit, edition, school, status=status, reason=reason)


def _edition_view(
    request: Request,
    session: Session,
    visit: Visit,
    edition: Edition,
    school: School,
    *,
    status: str = "",
    reason: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    lines = edition_status(session, edition)
    shown = [
        line
        for line in lines
        if (not status or line.status == status) and (not reason or line.reason == reason)
    ]
    decider = session.get(Admin, edition.decided_by) if edition.decided_by else None
    return admin_page(
        request,
        "edition.html",
        {
            "title": f"Edition {edition.id}",
            "visit": visit,
            "school": school,
            "edition": edition,
            "lines": shown,
            "total": len(lines),
            "summary": summarize(lines),
            "status": status,
            "reason": reason,
            "statuses": STATUSES,
            "reasons": REASONS,
            "decisions": [d.value for d in Decision if edition.status in ALLOWED[d][0]],
            "decider": decider.email if decider else None,
            "error": error,
            "when": lambda moment: local_time(moment, school.timezone),
        },
        status_code,
    )


@router.post("/editions/{edition_id}/decide")
def edition_decide(
    request: Request,
    session: Db,
    edition_id: int,
    decision: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Approve, hold or cancel; a refusal is shown on the edition's page with its reason."""
    visit = posted_visit(request, session, csrf)
    edition, school = edition_for(session, visit, edition_id)
    try:
        chosen = Decision(decision)
    except ValueError:
        raise HTTPException(400, f'"{decision}" is not a decision') from None
    try:
        decide(session, edition.id, chosen, at=utcnow(), admin_id=visit.admin.id)
    except DecisionRefused as refused:
        session.rollback()
        edition, school = edition_for(session, visit, edition_id)
        return _edition_view(
            request, session, visit, edition, school, error=str(refused), status_code=409
        )
    session.commit()
    return RedirectResponse(f"/admin/editions/{edition.id}", status_code=303)


@router.post("/schools/{school_id}/run")
def school_run_now(
    request: Request, session: Db, school_id: str, csrf: Annotated[str, Form()] = ""
) -> Response:
    """An extra edition with cutoff now; the next regular edition starts from there."""
    visit = posted_visit(request, session, csrf)
    school = school_for(session, visit, school_id)
    try:
        result = run_now(session, school.id, at=utcnow(), admin_id=visit.admin.id)
    except DigestError as error:
        session.rollback()
        raise HTTPException(409, f"The school could not be run now: {error}") from None
    session.commit()
    return RedirectResponse(f"/admin/editions/{result.edition.id}", status_code=303)


@router.post("/schools/{school_id}/suppressions/lift")
def lift_suppression(
    request: Request,
    session: Db,
    school_id: str,
    address: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Lift the suppression of an address of one of this school's guardians."""
    visit = posted_visit(request, session, csrf)
    school = school_for(session, visit, school_id)
    key = address.strip().lower()
    guardian = session.scalars(
        select(Guardian).where(Guardian.school_id == school.id, func.lower(Guardian.email) == key)
    ).first()
    if guardian is None or session.get(Suppression, key) is None:
        raise HTTPException(403, NOT_YOURS)
    remove_suppression(session, key)
    session.add(
        AuditEvent(
            at=utcnow(),
            admin_id=visit.admin.id,
            action="suppression_lift",
            school_id=school.id,
            guardian_id=guardian.id,
        )
    )
    session.commit()
    log.info("admin %s lifted a suppression of guardian %s", visit.admin.id, guardian.id)
    return RedirectResponse(f"/admin/schools/{school.id}", status_code=303)


# --- the audit log --------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, session: Db, school: str = "") -> Response:
    """Who did what, when, in the administrator's schools (and its own logins)."""
    visit = current_visit(request, session)
    if visit is None:
        return to_login(request)
    if school and school not in visit.school_ids:
        raise HTTPException(403, NOT_YOURS)
    scope = [school] if school else list(visit.school_ids)
    where: ColumnElement[bool] = AuditEvent.school_id.in_(scope)
    if not school:
        where = or_(where, AuditEvent.admin_id == visit.admin.id)
    rows = session.execute(
        select(AuditEvent, Admin.email, Guardian.name)
        .outerjoin(Admin, Admin.id == AuditEvent.admin_id)
        .outerjoin(Guardian, Guardian.id == AuditEvent.guardian_id)
        .where(where)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(500)
    ).all()
    return admin_page(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "visit": visit,
            "rows": rows,
            "school": school,
            "when": lambda moment: local_time(moment, "Europe/Amsterdam"),
        },
    )
