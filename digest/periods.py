"""Edition cutoffs in a school's own time zone: pure functions over explicit instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_instant(text: str, zone: str) -> datetime:
    """An ISO-8601 instant; one without an offset is read in ``zone`` (the school's)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(UTC)


def _local_cutoff(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0 picks the first of an ambiguous hour; a cutoff inside a DST gap moves forward.
    local = datetime.combine(day, at, tzinfo=zone)
    return local.astimezone(UTC).astimezone(zone).astimezone(UTC)


def latest_cutoff(at: datetime, *, weekday: int, clock: str, zone: str) -> datetime:
    """The latest regular cutoff at or before ``at`` (weekday 0 = Monday, clock "HH:MM")."""
    tz = ZoneInfo(zone)
    at_time = time.fromisoformat(clock)
    local = at.astimezone(tz)
    day = local.date() - timedelta(days=(local.weekday() - weekday) % 7)
    cutoff = _local_cutoff(day, at_time, tz)
    if cutoff > at:
        cutoff = _local_cutoff(day - timedelta(days=7), at_time, tz)
    return cutoff


def next_cutoff(after: datetime, *, weekday: int, clock: str, zone: str) -> datetime:
    """The first regular cutoff strictly after ``after``."""
    tz = ZoneInfo(zone)
    at_time = time.fromisoformat(clock)
    local = after.astimezone(tz)
    day = local.date() + timedelta(days=(weekday - local.weekday()) % 7)
    cutoff = _local_cutoff(day, at_time, tz)
    if cutoff <= after:
        cutoff = _local_cutoff(day + timedelta(days=7), at_time, tz)
    return cutoff


def previous_regular_cutoff(cutoff: datetime, *, weekday: int, clock: str, zone: str) -> datetime:
    """The regular cutoff before ``cutoff`` (a week earlier in local time, across DST)."""
    return latest_cutoff(cutoff - timedelta(seconds=1), weekday=weekday, clock=clock, zone=zone)


def iso_week(instant: datetime, zone: str) -> int:
    """The ISO week number of ``instant`` in ``zone``: the week of a newsletter's subject."""
    return instant.astimezone(ZoneInfo(zone)).isocalendar().week
