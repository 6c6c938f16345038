"""Verification of inbound callbacks: Twilio signatures and in-app HMAC (GHL webhooks
have one front door, churnapp's `/api/webhooks/ghl/<slug>/`)."""

from __future__ import annotations

import time

from django.conf import settings
from twilio.request_validator import RequestValidator

from churnapp.exceptions import WebhookRejected
from notifications.tokens import hmac_verify


def twilio_verify(*, auth_token: str, url: str, params: dict, signature: str) -> None:
    if not auth_token:
        raise WebhookRejected("Twilio auth token is not configured", code="not_configured")
    if not signature or not RequestValidator(auth_token).validate(url, params, signature):
        raise WebhookRejected("bad or missing X-Twilio-Signature")


def hmac_request_verify(*, secret: str, timestamp: str, body: bytes, signature: str) -> None:
    if not secret:
        raise WebhookRejected("no signing secret is configured", code="not_configured")
    try:
        age = abs(time.time() - int(timestamp))
    except (TypeError, ValueError) as exc:
        raise WebhookRejected("missing or bad X-Timestamp") from exc
    if age > settings.NOTIFICATIONS_CALLBACK_MAX_AGE_SECONDS:
        raise WebhookRejected("X-Timestamp is too old")
    if not hmac_verify(secret=secret, timestamp=timestamp, body=body, signature=signature):
        raise WebhookRejected("bad X-Signature")
