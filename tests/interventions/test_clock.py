"""Quiet hours in the lead's zone and SLAs in business hours."""

import datetime as dt
from zoneinfo import ZoneInfo

from interventions.clock import add_business_hours, in_quiet_hours, quiet_hours_release

CHICAGO = ZoneInfo("America/Chicago")
Q_START, Q_END = dt.time(21, 0), dt.time(8, 0)


def _utc(y, m, d, h, mi=0):
    return dt.datetime(y, m, d, h, mi, tzinfo=dt.UTC)


def test_send_outside_quiet_hours_is_not_moved():
    noon_chicago = dt.datetime(2026, 3, 2, 12, 0, tzinfo=CHICAGO)
    assert quiet_hours_release(noon_chicago, CHICAGO, Q_START, Q_END) == noon_chicago


def test_late_evening_send_moves_to_next_morning_in_lead_zone():
    late = dt.datetime(2026, 3, 2, 22, 30, tzinfo=CHICAGO)
    release = quiet_hours_release(late, CHICAGO, Q_START, Q_END)
    assert release.astimezone(CHICAGO) == dt.datetime(2026, 3, 3, 8, 0, tzinfo=CHICAGO)


def test_early_morning_send_moves_to_same_morning():
    early = dt.datetime(2026, 3, 2, 3, 15, tzinfo=CHICAGO)
    release = quiet_hours_release(early, CHICAGO, Q_START, Q_END)
    assert release.astimezone(CHICAGO) == dt.datetime(2026, 3, 2, 8, 0, tzinfo=CHICAGO)


def test_same_utc_instant_is_quiet_for_one_zone_and_not_another():
    instant = _utc(2026, 3, 2, 4)  # 22:00 in Chicago, 13:00 in Tokyo
    assert in_quiet_hours(instant.astimezone(CHICAGO), Q_START, Q_END)
    assert not in_quiet_hours(instant.astimezone(ZoneInfo("Asia/Tokyo")), Q_START, Q_END)


def test_sla_counts_only_business_hours():
    # Friday 15:00 + 4 business hours = Monday 11:00 (2 h Friday, 2 h Monday).
    friday = dt.datetime(2026, 3, 6, 15, 0, tzinfo=CHICAGO)
    due = add_business_hours(friday, 4, CHICAGO, dt.time(9), dt.time(17))
    assert due.astimezone(CHICAGO) == dt.datetime(2026, 3, 9, 11, 0, tzinfo=CHICAGO)


def test_sla_opened_at_night_starts_next_morning():
    night = dt.datetime(2026, 3, 3, 23, 0, tzinfo=CHICAGO)
    due = add_business_hours(night, 4, CHICAGO, dt.time(9), dt.time(17))
    assert due.astimezone(CHICAGO) == dt.datetime(2026, 3, 4, 13, 0, tzinfo=CHICAGO)
