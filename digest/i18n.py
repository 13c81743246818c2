"""The mail's languages: gettext catalogues compiled in memory; dates and lists through Babel."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, tzinfo
from io import BytesIO
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

DEFAULT_LOCALE = "nl"  # the schools' language, and the fallback for a locale without catalogue
DOMAIN = "digest"

# One pattern for both languages: Dutch and British English both say "dinsdag 24 november" /
# "Tuesday 24 November", and a 24-hour clock is what the school's timetable uses anyway.
_DAY = "EEEE d MMMM"
_DAY_WITH_YEAR = "EEEE d MMMM y"
_TIME = "HH:mm"


@functools.cache
def available_locales(locale_dir: Path) -> frozenset[str]:
    """The locales with a catalogue: ``<locale_dir>/<lang>/LC_MESSAGES/digest.po``."""
    return frozenset(po.parent.parent.name for po in locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


@functools.lru_cache(maxsize=256)  # once per tag: every mail asks
def resolve_locale(tag: str, locale_dir: Path) -> str:
    """The catalogue for a BCP 47 tag: the tag itself, else its language, else the default."""
    known = available_locales(locale_dir)
    try:
        parsed = Locale.parse(tag.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return DEFAULT_LOCALE
    for candidate in (str(parsed), parsed.language):
        if candidate in known:
            return candidate
    return DEFAULT_LOCALE


@functools.cache
def translations(locale: str, locale_dir: Path) -> Translations:
    """The compiled catalogue for ``locale`` (resolved first), read from its .po file once."""
    resolved = resolve_locale(locale, locale_dir)
    po_path = locale_dir / resolved / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=resolved, domain=DOMAIN)
    # Compiling in memory keeps .mo files out of the repository and never stale.
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def format_when(moment: datetime, tz: tzinfo, locale: str, *, now: datetime | None = None) -> str:
    """A day and time in the school's zone: "dinsdag 24 november, 10:15" (year if not now's)."""
    return f"{format_day(moment, tz, locale, now=now)}, {format_clock(moment, tz, locale)}"


def format_day(moment: datetime, tz: tzinfo, locale: str, *, now: datetime | None = None) -> str:
    """The day in the school's zone, e.g. "dinsdag 24 november"; with the year if not now's."""
    local = moment.astimezone(tz)
    this_year = (now or datetime.now(tz)).astimezone(tz).year
    pattern = _DAY if local.year == this_year else _DAY_WITH_YEAR
    return format_datetime(local, pattern, tzinfo=tz, locale=_babel(locale))


def format_clock(moment: datetime, tz: tzinfo, locale: str) -> str:
    """The time of day in the school's zone, e.g. "09:00"."""
    return format_datetime(moment.astimezone(tz), _TIME, tzinfo=tz, locale=_babel(locale))


def format_span(
    starts: datetime, ends: datetime | None, tz: tzinfo, locale: str, *, now: datetime | None = None
) -> str:
    """An event's time: "woensdag 2 december, 09:00–12:00", or both days when it spans days."""
    start = format_when(starts, tz, locale, now=now)
    if ends is None or ends <= starts:
        return start
    if ends.astimezone(tz).date() == starts.astimezone(tz).date():
        return f"{start}–{format_clock(ends, tz, locale)}"
    return f"{start} – {format_when(ends, tz, locale, now=now)}"


def format_names(names: Sequence[str], locale: str) -> str:
    """Names as the language lists them: "Groep 5, Groep 7 en De Schakel"."""
    return format_list(list(names), locale=_babel(locale)) if names else ""


@functools.lru_cache(maxsize=64)
def _babel(locale: str) -> Locale:
    # Babel parses a locale given by name on every call; a mail formats several names and dates.
    return Locale.parse(locale)
