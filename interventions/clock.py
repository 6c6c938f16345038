"""Pure time rules: quiet hours in the lead's zone and SLAs in business hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def in_quiet_hours(local: dt.datetime, start: dt.time, end: dt.time) -> bool:
    t = local.timetz().replace(tzinfo=None)
    if start == end:
        return False
    if start < end:  # e.g. 13:00-15:00 within one day
        return start <= t < end
    return t >= start or t < end  # wraps midnight, e.g. 21:00-08:00


def quiet_hours_release(
    when: dt.datetime, tz: ZoneInfo, start: dt.time, end: dt.time
) -> dt.datetime:
    """`when` if it is outside quiet hours in `tz`, else the end of that quiet window.

    A send due inside quiet hours moves to the window's edge; it is never dropped.
    """
    local = when.astimezone(tz)
    if not in_quiet_hours(local, start, end):
        return when
    release_day = local.date()
    if start > end and local.timetz().replace(tzinfo=None) >= start:
        release_day += dt.timedelta(days=1)
    release = dt.datetime.combine(release_day, end, tzinfo=tz)
    return release.astimezone(dt.UTC)


def add_business_hours(
    start: dt.datetime, hours: float, tz: ZoneInfo, day_start: dt.time, day_end: dt.time
) -> dt.datetime:
    """`start` plus `hours` of business time (Monday to Friday, day_start to day_end in tz)."""
    remaining = dt.timedelta(hours=hours)
    cursor = start.astimezone(tz)
    while True:
        opens = dt.datetime.combine(cursor.date(), day_start, tzinfo=tz)
        closes = dt.datetime.combine(cursor.date(), day_end, tzinfo=tz)
        if cursor.weekday() >= 5 or cursor >= closes:
            cursor = dt.datetime.combine(cursor.date() + dt.timedelta(days=1), day_start, tzinfo=tz)
            continue
        cursor = max(cursor, opens)
        available = closes - cursor
        if remaining <= available:
            return (cursor + remaining).astimezone(dt.UTC)
        remaining -= available
        cursor = closes
