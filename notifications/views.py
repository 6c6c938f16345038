"""Tracking endpoints reached from emails: open pixel, click redirect, unsubscribe."""

from __future__ import annotations

import base64
import hashlib

from django.core import signing
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notifications.models import Message
from notifications.services.callbacks import email_unsubscribe_record, message_engagement_record
from notifications.tokens import token_read

_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _message(purpose: str, token: str) -> tuple[Message | None, dict]:
    try:
        payload = token_read(purpose=purpose, token=token)
    except signing.BadSignature:
        return None, {}
    return Message.objects.select_related("tenant", "lead").filter(
        pk=payload.get("m")
    ).first(), payload


@require_http_methods(["GET", "HEAD"])
def open_pixel(request, token: str):
    try:
        message_id = int(token_read(purpose="open", token=token)["m"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return HttpResponseBadRequest("bad token")
    # One open per message: image proxies and re-opens load the pixel again. The service
    # locks the message by id: reading it here first was one more query per open.
    try:
        message_engagement_record(
            message_id=message_id, kind="opened", provider="pixel", event_id=f"open:{message_id}"
        )
    except Message.DoesNotExist:  # signed by us, since deleted (retention)
        return HttpResponseBadRequest("bad token")
    response = HttpResponse(_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


@require_http_methods(["GET", "HEAD"])
def click_redirect(request, token: str):
    message, payload = _message("click", token)
    url = payload.get("u")
    # Only URLs the message itself contained: never an open redirect.
    if message is None or not url or url not in (message.links or []):
        return HttpResponseBadRequest("bad token")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    message_engagement_record(
        message=message,
        kind="clicked",
        provider="redirect",
        event_id=f"click:{message.pk}:{digest}",
        payload={"url": url},
    )
    return HttpResponseRedirect(url)


@csrf_exempt  # RFC 8058 one-click: the mail provider POSTs without our CSRF cookie.
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    message, _ = _message("unsubscribe", token)
    if message is None:
        return HttpResponseBadRequest("bad token")
    if request.method == "GET":
        # A GET only asks: link scanners fetch every URL in an email.
        return HttpResponse(
            "<!doctype html><title>Unsubscribe</title>"
            f"<p>Stop emails from {escape(message.tenant.name)} to "
            f"{escape(message.to_address)}?</p>"
            '<form method="post"><button type="submit">Unsubscribe</button></form>'
        )
    email_unsubscribe_record(message=message)
    return HttpResponse("<!doctype html><title>Unsubscribed</title><p>You are unsubscribed.</p>")
