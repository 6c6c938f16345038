"""One error format for the whole API: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from churnapp.exceptions import ApplicationError


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        inner = _first_message(value)
        return inner if key in ("non_field_errors", "detail") else f"{key}: {inner}"
    return str(detail)


def error_response(
    *, status_code: int, code: str, message: str, details=None, headers=None
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return Response(body, status=status_code, headers=headers)


# deadlock_detected, serialization_failure, lock_not_available
CONCURRENCY_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def _sqlstate(exc: Exception) -> str | None:
    """The PostgreSQL SQLSTATE behind a Django database error (the driver's, which Django
    keeps as the cause)."""
    return getattr(exc.__cause__, "pgcode", None)


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return error_response(
            status_code=exc.status_code, code=exc.code, message=exc.message, details=exc.details
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError) and _sqlstate(exc) in CONCURRENCY_SQLSTATES:
        # Another request's transaction held the same rows (a deadlock, a serialization
        # failure, a lock wait cut short): ours rolled back whole. The database is fine,
        # and the same request, sent again, is expected to succeed.
        return error_response(
            status_code=status.HTTP_409_CONFLICT,
            code="conflict",
            message="A concurrent write to the same rows conflicted; nothing was written. "
            "Retry the request.",
            headers={"Retry-After": "1"},
        )
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable or dropped the connection mid-request (the
        # transaction rolled back: nothing was written): a clear, retryable answer.
        return error_response(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            code="service_unavailable",
            message="The database is unavailable; retry later.",
            headers={"Retry-After": "5"},
        )

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "validation_error", _first_message(exc.detail), exc.detail
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        message, details = str(detail), {}
    response.data = {"error": {"code": code, "message": message, "details": details}}
    return response


def not_found_view(request, exception=None):
    """handler404: the API's error format under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        body = {
            "error": {
                "code": "not_found",
                "message": f"No API endpoint at {request.path}.",
                "details": {},
            }
        }
        return JsonResponse(body, status=404)
    return defaults.page_not_found(request, exception)
