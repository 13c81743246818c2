"""Preview as a parent: a guardian's mail of a week as sending renders it, and a test of it.

The test goes to the logged-in administrator's own address only, through the configured
transport, with "[TEST] " before the subject and without the parent's unsubscribe headers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from digest.compose import MAIL_CONSENT, load_posts, may_mail
from digest.dkim import Signer
from digest.errors import DeliveryFailed, TransportError
from digest.links import Links
from digest.models import AuditEvent, Edition, Guardian, MediaType, School, utcnow
from digest.periods import next_cutoff
from digest.preview import Preview, preview
from digest.render import RenderedMail, Renderer
from digest.settings import Settings
from digest.transports import open_transport
from digest.web.admin_session import (
    NOT_YOURS,
    Db,
    Visit,
    admin_page,
    current_visit,
    guardian_for,
    local_time,
    posted_visit,
    school_for,
    settings_of,
    to_login,
)

log = logging.getLogger(__name__)

router = APIRouter()

TEST_PREFIX = "[TEST] "
# Headers a test copy must not carry: a mail client's "unsubscribe" button would act for the
# parent, and nobody but the administrator may receive it.
_TEST_DROPPED_HEADERS = ("Cc", "Bcc", "List-Unsubscribe", "List-Unsubscribe-Post")


@dataclass(frozen=True)
class WithheldPhoto:
    post_title: str
    why: str


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass(frozen=True)
class PreviewView:
    result: Preview
    parts: list[RenderedMail]
    week: date


def _renderer(request: Request) -> Renderer:
    # Compiling the templates takes a while: once per application.
    state = request.app.state
    if getattr(state, "admin_renderer", None) is None:
        state.admin_renderer = Renderer(settings_of(request))
    renderer: Renderer = state.admin_renderer
    return renderer


def _week(school: School, week: str, edition_id: int | None, session: Session) -> datetime:
    """The cutoff of the edition to show: an edition's own, the week of a date, or this week."""
    if edition_id is not None:
        edition = session.get(Edition, edition_id)
        if edition is None or edition.school_id != school.id:
            raise HTTPException(403, NOT_YOURS)
        return edition.cutoff
    zone = ZoneInfo(school.timezone)
    if week:
        try:
            day = date.fromisoformat(week)
        except ValueError:
            raise HTTPException(400, "The week is a date like 2026-11-27.") from None
        start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    else:
        # The edition a post published now goes into: on the cutoff's day, after the cutoff,
        # that is next week's, not the one just planned (which ``week`` or ``edition`` shows).
        start = utcnow()
    # The edition whose period holds that moment: the first cutoff from it on.
    return next_cutoff(
        start - timedelta(seconds=1),
        weekday=school.digest_weekday,
        clock=school.digest_time,
        zone=school.timezone,
    )


def _render_preview(
    request: Request, session: Session, guardian: Guardian, cutoff: datetime
) -> PreviewView:
    now = utcnow()
    result = preview(session, Links(settings_of(request)), guardian.id, at=now, cutoff=cutoff)
    parts = _renderer(request).render_parts(result.content, now=now)
    school = session.get_one(School, guardian.school_id)
    return PreviewView(result, parts, cutoff.astimezone(ZoneInfo(school.timezone)).date())


def _withheld(session: Session, preview_view: PreviewView) -> list[WithheldPhoto]:
    """Each photo kept out of the mail, and why (the children whose consent does not allow it)."""
    content = preview_view.result.content
    post_ids = [
        post.id for section in content.sections for post in section.posts if post.withheld_photos
    ]
    found = []
    for post in load_posts(session, post_ids):
        for media in post.media:
            still = media.url if media.type is MediaType.IMAGE else media.poster_url
            if not still:
                found.append(WithheldPhoto(post.title, "a video without a still image"))
            elif not may_mail(media):
                children = ", ".join(
                    f"{child.first_name} (consent: {child.photo_consent.value})"
                    for child in media.children
                    if child.photo_consent not in MAIL_CONSENT
                )
                found.append(WithheldPhoto(post.title, f"no consent for mail: {children}"))
    return found


def _attachments(message: EmailMessage) -> list[Attachment]:
    found = []
    for part in message.iter_attachments():
        if not isinstance(part, EmailMessage):
            continue
        payload = part.get_payload(decode=True)
        found.append(
            Attachment(
                name=part.get_filename() or "(no name)",
                content_type=part.get_content_type(),
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return found


def _preview_view(
    request: Request,
    session: Session,
    visit: Visit,
    school: School,
    *,
    guardian: Guardian | None,
    shown: PreviewView | None,
    notice: str | None = None,
    error: str | None = None,
    week: str = "",
    edition_id: int | None = None,
    status_code: int = 200,
) -> Response:
    guardians = session.scalars(
        select(Guardian).where(Guardian.school_id == school.id).order_by(Guardian.name)
    ).all()
    return admin_page(
        request,
        "preview.html",
        {
            "title": "Preview",
            "visit": visit,
            "school": school,
            "guardians": guardians,
            "guardian": guardian,
            "week": shown.week.isoformat() if shown else week,
            "edition_id": edition_id,
            "shown": shown,
            "parts": [
                {
                    "mail": mail,
                    "headers": [(name, str(value)) for name, value in mail.message.items()],
                    "attachments": _attachments(mail.message),
                }
                for mail in (shown.parts if shown else [])
            ],
            "withheld": _withheld(session, shown) if shown else [],
            "notice": notice,
            "error": error,
            "when": lambda moment: local_time(moment, school.timezone),
        },
        status_code,
    )


@router.get("/schools/{school_id}/preview")
def preview_page(
    request: Request,
    session: Db,
    school_id: str,
    guardian: Annotated[str, Query()] = "",
    week: Annotated[str, Query()] = "",
    edition: Annotated[int | None, Query()] = None,
) -> Response:
    """A guardian's mail of a week, as sending renders it; each view is in the audit log."""
    visit = current_visit(request, session)
    if visit is None:
        return to_login(request)
    school = school_for(session, visit, school_id)
    if not guardian:
        return _preview_view(request, session, visit, school, guardian=None, shown=None, week=week)
    person = guardian_for(session, school, guardian)
    cutoff = _week(school, week, edition, session)
    shown = _render_preview(request, session, person, cutoff)
    session.add(
        AuditEvent(
            at=utcnow(),
            admin_id=visit.admin.id,
            action="preview",
            school_id=school.id,
            guardian_id=person.id,
            detail=f"edition ending {cutoff.isoformat()}",
        )
    )
    session.commit()
    log.info("admin %s previewed the mail of guardian %s", visit.admin.id, person.id)
    return _preview_view(
        request, session, visit, school, guardian=person, shown=shown, edition_id=edition
    )


def test_copy(mail: RenderedMail, to: str) -> bytes:
    """``mail`` as a test for ``to``: the same message, "[TEST] " subject, no parent's headers."""
    message = mail.message
    message.replace_header("To", to)
    message.replace_header("Subject", TEST_PREFIX + str(message["Subject"]))
    for name in _TEST_DROPPED_HEADERS:
        del message[name]
    return message.as_bytes(policy=SMTP)


async def _send_test(settings: Settings, messages: list[bytes], to: str) -> None:
    transport = open_transport(
        settings.mail_url, pool_size=1, deadline=settings.send_deadline_seconds
    )
    try:
        for data in messages:
            await transport.send(data, sender=settings.envelope_sender, recipients=[to])
    finally:
        await transport.close()


@router.post("/schools/{school_id}/preview/send")
def send_test(
    request: Request,
    session: Db,
    school_id: str,
    guardian: Annotated[str, Form()] = "",
    week: Annotated[str, Form()] = "",
    edition: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Send the previewed mail to the administrator's own address only, marked as a test."""
    settings = settings_of(request)
    visit = posted_visit(request, session, csrf)
    school = school_for(session, visit, school_id)
    person = guardian_for(session, school, guardian)
    edition_id = int(edition) if edition.isdigit() else None
    cutoff = _week(school, week, edition_id, session)
    shown = _render_preview(request, session, person, cutoff)
    to = visit.admin.email
    messages = [test_copy(mail, to) for mail in shown.parts]
    signer = Signer.from_settings(settings)
    if signer is not None:
        messages = [signer.sign(data) for data in messages]
    try:
        asyncio.run(_send_test(settings, messages, to))
    except (DeliveryFailed, TransportError) as failure:
        log.warning("test mail of guardian %s not sent: %s", person.id, type(failure).__name__)
        return _preview_view(
            request,
            session,
            visit,
            school,
            guardian=person,
            shown=shown,
            error=f"The test was not sent: {failure}",
            edition_id=edition_id,
            status_code=502,
        )
    session.add(
        AuditEvent(
            at=utcnow(),
            admin_id=visit.admin.id,
            action="send_test",
            school_id=school.id,
            guardian_id=person.id,
            detail=f"edition ending {cutoff.isoformat()}, {len(messages)} part(s)",
        )
    )
    session.commit()
    log.info("admin %s sent a test of the mail of guardian %s", visit.admin.id, person.id)
    return _preview_view(
        request,
        session,
        visit,
        school,
        guardian=person,
        shown=shown,
        notice=f"A test was sent to {to}.",
        edition_id=edition_id,
    )
