"""The portal's API: push an export document, read back the choices parents made with us.

Both endpoints want ``Authorization: Bearer <DIGEST_API_TOKEN>``; without that setting the API
is off (503). ``POST /api/v1/import`` runs exactly what ``digest import`` runs
(:func:`digest.ingest.import_document`), so a document is refused whole with the same problems,
each naming its JSON path.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from digest.contract import ChildIn, GroupIn, GuardianIn, PostIn, SchoolIn, Tombstone
from digest.errors import ImportRefused
from digest.ingest import ImportSummary, import_document, parse_document
from digest.models import Guardian
from digest.settings import Settings

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 50 * 1024 * 1024  # a board of 100,000 guardians is some 30 MB of JSON


# --- response models (the OpenAPI document shows them) --------------------------------------


class ErrorOut(BaseModel):
    detail: str


class InvalidOut(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="What is wrong: a sentence naming the parameter, or FastAPI's list"
    )


class ProblemOut(BaseModel):
    path: str = Field(description='Where, as a JSON path: "posts[3].group_id"; "" for the whole')
    message: str


class RefusedOut(BaseModel):
    detail: str
    problems: list[ProblemOut]


class ImportOut(BaseModel):
    counts: dict[str, dict[str, int]] = Field(
        description='Per kind, how many objects were "created", "updated", "deleted", …'
    )
    schools_changed: list[str] = Field(description="Schools whose schedule settings changed")


class PreferenceOut(BaseModel):
    guardian_id: str
    school_id: str
    delivery: Literal["app", "email", "newsletter"] | None = Field(
        description="The parent's choice; null when they only unsubscribed"
    )
    locale: str | None
    opted_out: bool
    changed_at: datetime


class PreferencesOut(BaseModel):
    since: datetime
    preferences: list[PreferenceOut]


# --- the import document's schema, for the OpenAPI document only ----------------------------


class _ImportDocument(BaseModel):
    """A portal export, contract v1 (DESIGN.md); checked by digest.ingest, not by FastAPI."""

    version: Literal[1]
    schools: list[SchoolIn | Tombstone] | None = None
    groups: list[GroupIn | Tombstone] | None = None
    children: list[ChildIn | Tombstone] | None = None
    guardians: list[GuardianIn | Tombstone] | None = None
    posts: list[PostIn | Tombstone] | None = None


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    # The contract has no recursive objects, so every $ref can be written out in place.
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inlined(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def _document_schema() -> dict[str, Any]:
    schema = TypeAdapter(_ImportDocument).json_schema()
    inlined: dict[str, Any] = _inlined(schema, schema.get("$defs", {}))
    return inlined


# --- authentication ------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


_bearer = HTTPBearer(auto_error=False, description="DIGEST_API_TOKEN")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The bearer token of the portal, compared in constant time; 503 while none is set."""
    expected = _settings(request).api_token
    if not expected:
        raise HTTPException(503, "the API is off: set DIGEST_API_TOKEN to turn it on")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No or a wrong bearer token"},
    503: {"model": ErrorOut, "description": "The API is off (no DIGEST_API_TOKEN)"},
}

router = APIRouter(prefix="/api/v1", tags=["portal"], dependencies=[Depends(require_token)])


# --- import --------------------------------------------------------------------------------


@router.post(
    "/import",
    response_model=ImportOut,
    responses={
        **_AUTH_ERRORS,
        413: {"model": ErrorOut, "description": f"Larger than {MAX_IMPORT_BYTES} bytes"},
        422: {"model": RefusedOut, "description": "Refused whole: every problem by path"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _document_schema()}},
        }
    },
)
async def import_portal_document(request: Request) -> Any:
    """Import a portal document (contract v1): the same checks and errors as ``digest import``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        return _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_IMPORT_BYTES:
            return _too_large()
    sessions = request.app.state.sessions
    try:
        summary = await run_in_threadpool(_import, sessions, bytes(body))
    except ImportRefused as exc:
        log.info("API import refused: %d problem(s)", len(exc.problems))
        return JSONResponse(
            RefusedOut(
                detail="the document was refused; nothing was imported",
                problems=[ProblemOut(path=p.path, message=p.message) for p in exc.problems],
            ).model_dump(),
            status_code=422,
        )
    log.info("API import done: %s", _tally(summary))
    return ImportOut(counts=summary.counts, schools_changed=sorted(summary.schools_changed))


def _too_large() -> JSONResponse:
    return JSONResponse(
        {"detail": f"the document is larger than {MAX_IMPORT_BYTES} bytes"}, status_code=413
    )


def _import(sessions: Any, raw: bytes) -> ImportSummary:
    document = parse_document(raw)
    with sessions() as session, session.begin():
        return import_document(session, document)


def _tally(summary: ImportSummary) -> str:
    return ", ".join(
        f"{kind} {sum(counts.values())}" for kind, counts in summary.counts.items() if counts
    )


# --- preferences -----------------------------------------------------------------------------


@router.get(
    "/preferences",
    response_model=PreferencesOut,
    responses={**_AUTH_ERRORS, 422: {"model": InvalidOut, "description": "A bad `since`"}},
)
def preferences(
    request: Request,
    since: Annotated[
        str,
        Query(
            description="ISO 8601 with an offset; choices made at or after it are listed",
            json_schema_extra={"format": "date-time"},
        ),
    ],
) -> Any:
    """The choices parents made through the service's pages since ``since``, oldest first.

    At or after, not only after: a choice stamped in the same instant as the portal's last
    read is listed again rather than lost; applying one twice is harmless.
    """
    try:
        moment = datetime.fromisoformat(since.strip())
    except ValueError:
        return _bad_since(f"{since[:40]!r} is not an ISO 8601 time")
    if moment.tzinfo is None:
        return _bad_since("give the time with an offset, e.g. 2026-11-27T16:00:00+01:00")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        return _bad_since(f"{since[:40]!r} is out of range")
    session: Session
    with request.app.state.sessions() as session:
        rows = session.scalars(
            select(Guardian)
            .where(Guardian.local_choice_at.is_not(None), Guardian.local_choice_at >= moment)
            .order_by(Guardian.local_choice_at, Guardian.id)
        ).all()
        found = [
            PreferenceOut(
                guardian_id=g.id,
                school_id=g.school_id,
                delivery=g.local_delivery.value if g.local_delivery else None,
                locale=g.local_locale,
                opted_out=g.opted_out_at is not None,
                changed_at=g.local_choice_at,
            )
            for g in rows
            if g.local_choice_at is not None
        ]
    return PreferencesOut(since=moment, preferences=found)


def _bad_since(message: str) -> JSONResponse:
    return JSONResponse({"detail": f"since: {message}"}, status_code=422)
