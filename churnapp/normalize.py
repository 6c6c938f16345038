"""Pure normalizers for CRM input: phone numbers to E.164, IANA time zones, emails, JSON."""

from __future__ import annotations

import datetime as dt
import functools
import json
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


# Deeper than any CRM payload we know (GHL nests 3-4 levels); deep enough to refuse
# bodies built to exhaust the parser's recursion or the database's jsonb nesting.
JSON_MAX_DEPTH = 32


def _json_value_clean(value, max_depth: int) -> bool:
    """True if json_value_check has nothing to say about `value`: one pass, level by
    level, with no tuple per node (a third of the cost on a 1,000-item API batch)."""
    level = [value]
    depth = 1
    while level:
        below: list = []
        for node in level:
            if isinstance(node, str):
                if "\x00" in node:
                    return False
            elif isinstance(node, dict):
                if depth > max_depth:
                    return False
                below += node
                below += node.values()
            elif isinstance(node, list):
                if depth > max_depth:
                    return False
                below += node
        level = below
        depth += 1
    return True


def json_value_check(value, *, max_depth: int = JSON_MAX_DEPTH) -> None:
    """ValueError if `value` nests objects/arrays deeper than `max_depth`, or holds a NUL
    character (PostgreSQL's jsonb and text refuse it: a database error, not a 400).
    Iterative, so no input can exhaust the stack."""
    if _json_value_clean(value, max_depth):
        return
    # Something is wrong: find it the way this always has, so a body with more than one
    # problem keeps naming the same one first.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError("JSON strings may not contain NUL (\\u0000)")
            continue
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def json_loads_bounded(raw: bytes | str, *, max_depth: int = JSON_MAX_DEPTH):
    """json.loads that also refuses nesting deeper than `max_depth`; ValueError (with a
    readable reason) for anything that is not acceptable JSON, never RecursionError."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}")
    json_value_check(value, max_depth=max_depth)
    return value
