"""Verification of inbound callbacks: Twilio signatures, GHL Ed25519/RSA, in-app HMAC."""

from __future__ import annotations

import base64
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.conf import settings
from twilio.request_validator import RequestValidator

from churnapp.exceptions import WebhookRejected
from notifications.tokens import hmac_verify


def twilio_verify(*, auth_token: str, url: str, params: dict, signature: str) -> None:
    if not auth_token:
        raise WebhookRejected("Twilio auth token is not configured", code="not_configured")
    if not signature or not RequestValidator(auth_token).validate(url, params, signature):
        raise WebhookRejected("bad or missing X-Twilio-Signature")


def ghl_verify(*, body: bytes, ed25519_signature: str, rsa_signature: str) -> None:
    """Ed25519 `x-ghl-signature` first, the legacy RSA `x-wh-signature` otherwise."""
    if ed25519_signature and settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY:
        key = serialization.load_pem_public_key(settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY.encode())
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise WebhookRejected("GHL_WEBHOOK_ED25519_PUBLIC_KEY is not an Ed25519 key")
        try:
            key.verify(base64.b64decode(ed25519_signature), body)
            return
        except (InvalidSignature, ValueError) as exc:
            raise WebhookRejected("bad x-ghl-signature") from exc
    if rsa_signature and settings.GHL_WEBHOOK_RSA_PUBLIC_KEY:
        key = serialization.load_pem_public_key(settings.GHL_WEBHOOK_RSA_PUBLIC_KEY.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("GHL_WEBHOOK_RSA_PUBLIC_KEY is not an RSA key")
        try:
            key.verify(base64.b64decode(rsa_signature), body, padding.PKCS1v15(), hashes.SHA256())
            return
        except (InvalidSignature, ValueError) as exc:
            raise WebhookRejected("bad x-wh-signature") from exc
    raise WebhookRejected("missing GHL signature (x-ghl-signature or x-wh-signature)")


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
