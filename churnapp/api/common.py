"""Shared API pieces: aware datetimes only, batch items, and the error envelope's schema."""

from __future__ import annotations

import datetime as dt

import django_filters
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from churnapp.exceptions import ApplicationError


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset; a naive time is refused rather than guessed."""

    default_error_messages = {
        "naive": "Datetime has no time zone; add a UTC offset such as 'Z' or '-05:00'.",
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:  # well formed but impossible, e.g. minute 60
                self.fail("invalid", format="ISO 8601")
            if parsed is not None and timezone.is_naive(parsed):
                self.fail("naive")
        return super().to_internal_value(value)


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 filter whose value reaches the database in UTC. Python accepts UTC
    offsets up to +-24 h, PostgreSQL only up to +-15:59: sent as given, a legal but odd
    offset would be a database error (a 500) instead of a plain comparison."""

    def filter(self, qs, value):
        if value is not None and not timezone.is_naive(value):
            value = value.astimezone(dt.UTC)
        return super().filter(qs, value)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField()


class ErrorSerializer(serializers.Serializer):
    """The one error format of the API."""

    error = ErrorBodySerializer()


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer) for code in codes}


def batch_items(data, *, max_items: int) -> list:
    """`data["items"]` as a list of at most `max_items`, checked before any item is."""
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ApplicationError(
            'Send {"items": [...]}: a JSON object with a list of items.',
            details={"items": "required (a list)"},
        )
    if not items:
        raise ApplicationError("items is empty.", code="empty_batch")
    if len(items) > max_items:
        raise ApplicationError(
            f"At most {max_items} items per request; got {len(items)}. Split the batch.",
            code="batch_too_large",
            details={"max_items": max_items, "received": len(items)},
        )
    return items


def items_validate(serializer_class: type[serializers.Serializer], items: list, noun: str) -> list:
    """Validate every item; ApplicationError with the errors by item index if any fails."""
    serializer = serializer_class(data=items, many=True)
    if serializer.is_valid():
        return serializer.validated_data
    errors = serializer.errors
    if not isinstance(errors, list):  # a non-list body error from the list serializer
        raise ApplicationError(f"Invalid {noun}.", details={"items": errors})
    by_index = {str(i): e for i, e in enumerate(errors) if e}
    raise ApplicationError(
        f"{len(by_index)} of {len(items)} {noun} are invalid; nothing was stored.",
        code="validation_error",
        details={"items": by_index},
    )


def items_partition(
    serializer_class: type[serializers.Serializer], items: list
) -> tuple[list[tuple[int, dict]], dict[str, dict]]:
    """Type-check every item: ([(index, validated data)], {index: field errors})."""
    valid: list[tuple[int, dict]] = []
    errors: dict[str, dict] = {}
    for index, item in enumerate(items):
        serializer = serializer_class(data=item)
        if serializer.is_valid():
            valid.append((index, serializer.validated_data))
        else:
            errors[str(index)] = serializer.errors
    return valid, errors
