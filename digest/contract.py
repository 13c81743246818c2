"""The v1 import document of the portal, as pydantic models, and its structural reading.

Everything that can be checked by looking at one object alone is checked here (types, enums,
addresses, URLs, time zones, offsets, control characters); what needs the other objects or the
store (references, schools, duplicates) is checked by :mod:`digest.ingest`. Problems carry JSON
paths like ``guardians[4].email`` so the portal's people can find them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from digest.errors import Problem
from digest.models import GroupKind, MediaType, PhotoConsent, PostKind, Preference

VERSION = 1
KINDS = ("schools", "groups", "children", "guardians", "posts")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# --- field types ------------------------------------------------------------------------------


def _fail(kind: str, message: str, **context: Any) -> PydanticCustomError:
    # Values go through the context, so braces in a school's data cannot garble the template.
    return PydanticCustomError(kind, message, context or None)


# PostgreSQL refuses NUL in text, and neither store takes a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Unicode's control characters (Cc) and line and paragraph separators (Zl, Zp).
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _plain_text(value: str) -> str:
    found = _UNSTORABLE.search(value)
    if found is not None:
        if found.group() == "\x00":
            raise _fail("nul_character", "must not contain NUL characters")
        raise _fail("invalid_unicode", "is not valid Unicode text")
    return value


def _header_text(value: str) -> str:
    # These strings reach mail headers and subjects: a line break there would forge headers.
    _plain_text(value)
    if _LINE_BREAKING.search(value) is not None:
        raise _fail("control_character", "must not contain line breaks or control characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _fail("blank", "must not be empty")
    return value


Text = Annotated[str, AfterValidator(_plain_text)]
HeaderText = Annotated[str, AfterValidator(_header_text)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_header_text)]
Name = Annotated[HeaderText, StringConstraints(max_length=200)]
ShortText = Annotated[Text, StringConstraints(max_length=500)]


_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def _http_url(value: str) -> str:
    _plain_text(value)
    if _SPACE_OR_CONTROL.search(value) is not None:
        raise _fail("url", "must be an http or https URL without spaces")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise _fail("url", "must be an http or https URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise _fail("url", "must be an http or https URL")
    return value


Url = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_http_url)]


# A plain address: an ASCII dot-atom local part and a domain. Its domain is judged once per
# document run (a board has 100,000 parents but a few dozen mail domains); anything else
# goes through the full check.
_PLAIN_ADDRESS = re.compile(r"([A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@([A-Za-z0-9.-]+)", re.ASCII)


def _is_email(address: str) -> bool:
    try:
        # Syntax only: an import must never wait on DNS.
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@lru_cache(maxsize=4096)
def _is_mail_domain(domain: str) -> bool:
    return _is_email(f"postmaster@{domain}")


def _email(value: str) -> str:
    stripped = value.strip()
    plain = _PLAIN_ADDRESS.fullmatch(stripped)
    if plain is not None and len(plain.group(1)) <= 64 and len(stripped) <= 254:
        valid = _is_mail_domain(plain.group(2))
    else:
        valid = _is_email(stripped)
    if not valid:
        raise _fail("email", "not a valid email address")
    return stripped


EmailAddress = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]


def _blank_is_none(value: Any) -> Any:
    # A portal that has no address may send "" rather than null: both mean unreachable.
    return None if isinstance(value, str) and not value.strip() else value


OptionalEmail = Annotated[EmailAddress | None, BeforeValidator(_blank_is_none)]


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _time_zone(value: str) -> str:
    if value not in _zones():
        raise _fail("time_zone", 'unknown time zone "{value}"', value=value)
    try:
        ZoneInfo(value)
    except (ValueError, OSError):
        raise _fail("time_zone", 'unknown time zone "{value}"', value=value) from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_time_zone)]

# RFC 5646 langtag, privateuse and the irregular grandfathered tags; syntax only.
_LANGTAG = re.compile(
    r"""
    (?:[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4}|[a-z]{5,8})   # language, extlang
    (?:-[a-z]{4})?                                         # script
    (?:-(?:[a-z]{2}|[0-9]{3}))?                            # region
    (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*               # variants
    (?:-[a-wyz0-9](?:-[a-z0-9]{2,8})+)*                    # extensions
    (?:-x(?:-[a-z0-9]{1,8})+)?                             # private use
    |x(?:-[a-z0-9]{1,8})+
    """,
    re.IGNORECASE | re.VERBOSE | re.ASCII,
)
_IRREGULAR_TAGS = frozenset(
    (
        "en-gb-oed",
        "i-ami",
        "i-bnn",
        "i-default",
        "i-enochian",
        "i-hak",
        "i-klingon",
        "i-lux",
        "i-mingo",
        "i-navajo",
        "i-pwn",
        "i-tao",
        "i-tay",
        "i-tsu",
        "sgn-be-fr",
        "sgn-be-nl",
        "sgn-ch-de",
    )
)


def _language_tag(value: str) -> str:
    if _LANGTAG.fullmatch(value) is None and value.lower() not in _IRREGULAR_TAGS:
        raise _fail("locale", 'not a BCP 47 language tag: "{value}"', value=value)
    return value


LanguageTag = Annotated[str, StringConstraints(max_length=35), AfterValidator(_language_tag)]


def _weekday(value: Any) -> int:
    if isinstance(value, str) and value in WEEKDAYS:
        return WEEKDAYS.index(value)
    raise _fail(
        "weekday",
        "unknown day {value}; allowed: {allowed}",
        value=_shown(value),
        allowed=", ".join(WEEKDAYS),
    )


Weekday = Annotated[int, BeforeValidator(_weekday)]

_CLOCK = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]", re.ASCII)


def _clock(value: str) -> str:
    if _CLOCK.fullmatch(value) is None:
        raise _fail("clock", 'must be a 24-hour time "HH:MM", not "{value}"', value=value)
    return value


ClockTime = Annotated[str, AfterValidator(_clock)]


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _fail("datetime_type", "must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail("datetime", 'not an ISO 8601 date-time: "{value}"', value=value) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _fail("naive_datetime", "needs a UTC offset")
    return parsed.astimezone(UTC)


Instant = Annotated[datetime, BeforeValidator(_instant)]


def _day(value: Any) -> date:
    if not isinstance(value, str):
        raise _fail("date_type", 'must be a date string "YYYY-MM-DD"')
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _fail("date", 'must be a date "YYYY-MM-DD", not "{value}"', value=value) from None


Day = Annotated[date, BeforeValidator(_day)]

E = TypeVar("E", bound=enum.Enum)


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _choice(label: str, choices: type[E]) -> Callable[[Any], E]:
    allowed = [member.value for member in choices]

    def check(value: Any) -> E:
        if isinstance(value, str) and value in allowed:
            return choices(value)
        raise _fail(
            "choice",
            "unknown {label} {value}; allowed: {allowed}",
            label=label,
            value=_shown(value),
            allowed=", ".join(allowed),
        )

    return check


# --- the objects of the document --------------------------------------------------------------


class _Item(BaseModel):
    """Any object of the document: unknown fields are ignored, null means "absent"."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # Fields with a default take it on null too; required ones still say what they need.
        if isinstance(data, dict):
            optional = _optional_fields(cls)
            return {k: v for k, v in data.items() if v is not None or k not in optional}
        return data


@cache
def _optional_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, info in model.model_fields.items() if not info.is_required())


class Tombstone(_Item):
    """``{"id": ..., "deleted": true}``: the stored object with this id is to be deleted."""

    id: Id
    deleted: Literal[True]


class _Live(_Item):
    id: Id
    # A true value makes the object a Tombstone before it gets here.
    deleted: StrictBool = False


class Holiday(_Item):
    """A school holiday: inclusive dates, no edition inside."""

    start: Day
    end: Day
    name: Annotated[Text, StringConstraints(max_length=200)] = ""

    @field_validator("end")
    @classmethod
    def _not_before_start(cls, end: date, info: ValidationInfo) -> date:
        start = info.data.get("start")
        if start is not None and end < start:
            raise _fail("holiday_order", "is before start")
        return end


class SchoolRefs(_Live):
    """What other objects can refer to in a school (its id)."""


class SchoolIn(SchoolRefs):
    name: Annotated[Name, AfterValidator(_not_blank)]
    timezone: TimeZoneName = "Europe/Amsterdam"
    locale: LanguageTag = "nl"
    digest_weekday: Weekday = 4
    digest_time: ClockTime = "16:00"
    reply_to: OptionalEmail = None
    portal_url: Url | None = None
    send_empty: StrictBool = False
    requires_approval: StrictBool = False
    holidays: list[Holiday] = []


class GroupRefs(_Live):
    school_id: Id


class GroupIn(GroupRefs):
    name: Annotated[Name, AfterValidator(_not_blank)]
    kind: Annotated[GroupKind, BeforeValidator(_choice("group kind", GroupKind))]


class ChildRefs(_Live):
    school_id: Id
    group_ids: list[Id] = []


class ChildIn(ChildRefs):
    first_name: Name
    # Absent consent is the strictest: no child shows up in a mail by accident.
    photo_consent: Annotated[
        PhotoConsent, BeforeValidator(_choice("photo consent", PhotoConsent))
    ] = PhotoConsent.NONE


class GuardianRefs(_Live):
    school_id: Id
    child_ids: list[Id] = []
    group_ids: list[Id] = []


class GuardianIn(GuardianRefs):
    name: Name
    email: OptionalEmail = None
    locale: LanguageTag | None = None
    delivery: Annotated[Preference, BeforeValidator(_choice("delivery", Preference))] = (
        Preference.NEWSLETTER
    )
    portal_account: StrictBool = True
    preferences_updated_at: Instant | None = None


class MediaRefs(_Item):
    id: Id
    child_ids: list[Id] = []


class MediaIn(MediaRefs):
    type: Annotated[MediaType, BeforeValidator(_choice("media type", MediaType))] = MediaType.IMAGE
    url: Url
    poster_url: Url | None = None
    alt: ShortText | None = None


class EventIn(_Item):
    starts_at: Instant
    ends_at: Instant | None = None
    location: ShortText | None = None

    @field_validator("ends_at")
    @classmethod
    def _not_before_start(cls, ends_at: datetime | None, info: ValidationInfo) -> datetime | None:
        starts_at = info.data.get("starts_at")
        if ends_at is not None and starts_at is not None and ends_at < starts_at:
            raise _fail("event_order", "is before starts_at")
        return ends_at


class LinkIn(_Item):
    url: Url
    title: Text = ""


class MeetingIn(_Item):
    """A parent-meeting sign-up."""

    signup_url: Url | None = None
    deadline: Instant | None = None


class HelpIn(_Item):
    """A call for volunteers."""

    signup_url: Url | None = None
    needed_at: Instant | None = None
    what: Text | None = None


class PostRefs(_Live):
    group_id: Id
    media: Sequence[MediaRefs] = ()


class PostIn(PostRefs):
    author: Name
    kind: Annotated[PostKind, BeforeValidator(_choice("post kind", PostKind))] = PostKind.MESSAGE
    title: Annotated[HeaderText, StringConstraints(max_length=500)]
    body_html: Text = ""
    url: Url | None = None
    published_at: Instant | None = None
    deleted_at: Instant | None = None
    media: list[MediaIn] = []
    event: EventIn | None = None
    links: list[LinkIn] = []
    meeting: MeetingIn | None = None
    help: HelpIn | None = None


# --- reading a whole document -----------------------------------------------------------------

L = TypeVar("L", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Entry(Generic[L, R]):
    """One object of a top-level array, as far as it could be read."""

    index: int
    id: str | None  # readable even when the rest of the object is not
    deleted: bool
    item: L | None = None  # the whole live object, when valid
    refs: R | None = None  # its references, when the object is invalid but they are readable

    @property
    def readable(self) -> L | R | None:
        """The object's references as far as they can be read (the whole object if valid)."""
        return self.item if self.item is not None else self.refs


@dataclass
class ParsedDocument:
    """The document's objects by kind, in document order, and what was wrong with them."""

    schools: list[Entry[SchoolIn, SchoolRefs]] = field(default_factory=list)
    groups: list[Entry[GroupIn, GroupRefs]] = field(default_factory=list)
    children: list[Entry[ChildIn, ChildRefs]] = field(default_factory=list)
    guardians: list[Entry[GuardianIn, GuardianRefs]] = field(default_factory=list)
    posts: list[Entry[PostIn, PostRefs]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_unicode": "is not valid Unicode text",
    "string_too_short": "must not be empty",
}


def path_of(prefix: str, loc: Sequence[int | str]) -> str:
    """A JSON path like ``posts[0].media[2].child_ids[1]`` from a prefix and pydantic's loc."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _message(error: ErrorDetails) -> str:
    if error["type"] == "string_too_long":
        limit = (error.get("ctx") or {}).get("max_length")
        return f"is longer than {limit} characters"
    return _MESSAGES.get(error["type"], error["msg"])


def problems_of(prefix: str, exc: ValidationError) -> list[Problem]:
    """Every error of a pydantic validation, as problems under the JSON path ``prefix``."""
    return [Problem(path_of(prefix, e["loc"]), _message(e)) for e in exc.errors()]


def _read(
    kind: str, raw: list[Any], live: type[L], refs: type[R], problems: list[Problem]
) -> list[Entry[L, R]]:
    entries: list[Entry[L, R]] = []
    for index, obj in enumerate(raw):
        prefix = f"{kind}[{index}]"
        if not isinstance(obj, dict):
            problems.append(Problem(prefix, "must be an object"))
            entries.append(Entry(index, None, False))
            continue
        raw_id = obj.get("id")
        # An id the store cannot hold (NUL, lone surrogates) is reported by validation; it must
        # not reach the queries that look references up.
        storable = isinstance(raw_id, str) and _UNSTORABLE.search(raw_id) is None
        obj_id = raw_id if storable else None
        if obj.get("deleted") is True:
            try:
                Tombstone.model_validate(obj)
            except ValidationError as exc:
                problems.extend(problems_of(prefix, exc))
                entries.append(Entry(index, None, True))
            else:
                entries.append(Entry(index, obj_id, True))
            continue
        try:
            item = live.model_validate(obj)
        except ValidationError as exc:
            problems.extend(problems_of(prefix, exc))
            try:
                # Its references can still be checked, so one pass lists every problem.
                partial: R | None = refs.model_validate(obj)
            except ValidationError:
                partial = None
            entries.append(Entry(index, obj_id, False, None, partial))
        else:
            entries.append(Entry(index, obj_id, False, item))
    return entries


def read_document(document: Any) -> ParsedDocument:
    """Check every object of a parsed JSON document on its own; references are not checked."""
    parsed = ParsedDocument()
    problems = parsed.problems
    if not isinstance(document, dict):
        problems.append(Problem("", "the document must be a JSON object"))
        return parsed
    version = document.get("version")
    if "version" not in document:
        problems.append(Problem("version", "is required"))
        return parsed
    if type(version) is not int or version != VERSION:
        # Another version means other rules: its other errors would only mislead.
        problems.append(
            Problem("version", f"unsupported version {_shown(version)}; this service reads 1")
        )
        return parsed
    arrays: dict[str, list[Any]] = {}
    for kind in KINDS:
        value = document.get(kind)
        if value is None:
            arrays[kind] = []
        elif isinstance(value, list):
            arrays[kind] = value
        else:
            problems.append(Problem(kind, "must be a list"))
            arrays[kind] = []
    parsed.schools = _read("schools", arrays["schools"], SchoolIn, SchoolRefs, problems)
    parsed.groups = _read("groups", arrays["groups"], GroupIn, GroupRefs, problems)
    parsed.children = _read("children", arrays["children"], ChildIn, ChildRefs, problems)
    parsed.guardians = _read("guardians", arrays["guardians"], GuardianIn, GuardianRefs, problems)
    parsed.posts = _read("posts", arrays["posts"], PostIn, PostRefs, problems)
    return parsed
