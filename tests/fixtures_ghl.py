"""Signed GHL webhook deliveries for any app's tests: real key pairs made per run,
payloads with fresh webhookIds and timestamps, and a `post_ghl` fixture."""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

_ids = itertools.count(1)


def _pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class GhlSigner:
    """Signs bodies the way GHL does, with key pairs made for this test run."""

    def __init__(self):
        self.ed_key = ed25519.Ed25519PrivateKey.generate()
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def ed25519(self, body: bytes) -> str:
        return base64.b64encode(self.ed_key.sign(body)).decode()

    def rsa(self, body: bytes) -> str:
        signature = self.rsa_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()


@pytest.fixture(scope="session")
def ghl_signer() -> GhlSigner:
    return GhlSigner()


@pytest.fixture
def ghl_keys(settings, ghl_signer) -> GhlSigner:
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = _pem(ghl_signer.ed_key.public_key())
    settings.GHL_WEBHOOK_RSA_PUBLIC_KEY = _pem(ghl_signer.rsa_key.public_key())
    settings.GHL_WEBHOOK_MAX_AGE_SECONDS = 300
    return ghl_signer


def ghl_event(event_type: str, *, location_id: str = "loc-acme", **fields) -> dict:
    """A GHL webhook payload with a fresh webhookId and timestamp."""
    return {
        "type": event_type,
        "locationId": location_id,
        "webhookId": f"wh-{next(_ids)}-{timezone.now().timestamp()}",
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        **fields,
    }


@pytest.fixture
def post_ghl(ghl_keys):
    """POST a payload (dict or raw bytes) to a tenant's GHL webhook URL, signed."""

    def post(slug: str, payload, *, scheme: str = "ed25519", headers: dict | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        extra = {}
        if scheme == "ed25519":
            extra["HTTP_X_GHL_SIGNATURE"] = ghl_keys.ed25519(body)
        elif scheme == "rsa":
            extra["HTTP_X_WH_SIGNATURE"] = ghl_keys.rsa(body)
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        return APIClient().post(
            reverse("churnapp:webhook-ghl", args=[slug]),
            data=body,
            content_type="application/json",
            **extra,
        )

    return post
