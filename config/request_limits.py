"""A cap on request bodies: anything larger than REQUEST_MAX_BODY_BYTES is answered 413
before a view, parser or signature check reads it (the admin's file uploads excepted)."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

EXEMPT_PREFIXES = ("/admin/",)


def _too_large(length: int, limit: int) -> JsonResponse:
    body = {
        "error": {
            "code": "payload_too_large",
            "message": f"The request body is {length} bytes; the limit is {limit}. "
            "Send smaller batches; nothing was stored.",
            "details": {"limit_bytes": limit, "received_bytes": length},
        }
    }
    return JsonResponse(body, status=413)


class RequestBodyLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.REQUEST_MAX_BODY_BYTES
        if limit and not request.path.startswith(EXEMPT_PREFIXES):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return _too_large(length, limit)
        return self.get_response(request)
