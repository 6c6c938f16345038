"""Pure normalizers for CRM input: phone numbers to E.164, IANA time zones, emails."""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

DEFAULT_PHONE_REGION = "US"


def phone_to_e164(raw: str, *, region: str = DEFAULT_PHONE_REGION) -> str:
    """`raw` as E.164 ("" stays ""). ValueError with a readable reason when invalid."""
    raw = (raw or "").strip()
    if not raw:
        return ""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{raw!r} is not a phone number ({exc._msg})")
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone_check(name: str) -> str:
    """`name` if it is an IANA time zone ("" stays ""), else ValueError."""
    name = (name or "").strip()
    if name and name not in _iana_names():
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'America/Chicago')")
    return name


def email_check(raw: str) -> str:
    raw = (raw or "").strip()
    if not raw:
        return ""
    try:
        validate_email(raw)
    except ValidationError:
        raise ValueError(f"{raw!r} is not a valid email address")
    return raw


def timestamp_parse(value) -> dt.datetime:
    """An aware datetime from ISO 8601 text or epoch seconds / milliseconds (number or
    digits). Naive ISO text is read as UTC. ValueError when it is neither."""
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError("a timestamp is required")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        # Epoch milliseconds are 13 digits today; seconds are 10.
        seconds = value / 1000 if abs(value) >= 1e11 else value
        try:
            return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value!r} is not a valid epoch timestamp")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed
