"""Signed tokens for the open pixel, click redirect, unsubscribe link and callbacks."""

from __future__ import annotations

import hashlib
import hmac

from django.core import signing

_SALTS = {
    "open": "notifications.open",
    "click": "notifications.click",
    "unsubscribe": "notifications.unsubscribe",
}


def token_make(*, purpose: str, message_id: int, url: str | None = None) -> str:
    payload: dict = {"m": message_id}
    if url is not None:
        payload["u"] = url
    return signing.dumps(payload, salt=_SALTS[purpose], compress=True)


def token_read(*, purpose: str, token: str) -> dict:
    """The signed payload; raises signing.BadSignature when forged or garbled."""
    return signing.loads(token, salt=_SALTS[purpose])


def hmac_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 (hex) over f"{timestamp}.{body}", as the in-app webhooks carry it."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def hmac_verify(*, secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    expected = hmac_signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, signature or "")
