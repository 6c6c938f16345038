"""A fake Web Push service: holds browser subscriptions' keys and decrypts what arrives."""

from __future__ import annotations

import base64
import json
import secrets

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.fakes.http import Answer, FakeServer, Recorded


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class PushFake(FakeServer):
    """`subscribe()` makes a browser subscription whose endpoint is this server.

    Every delivery must carry `Authorization: vapid t=<jwt>, k=<key>`,
    `Content-Encoding: aes128gcm` and `TTL`; its payload is decrypted with the
    subscription's private key into `received`."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self.received: list[dict] = []

    def subscribe(self) -> dict:
        sub_id = secrets.token_hex(8)
        private = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self._keys[sub_id] = (private, auth)
        public = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.url}/push/{sub_id}",
            "keys": {"p256dh": _b64(public), "auth": _b64(auth)},
        }

    def validate(self, request: Recorded) -> Answer | None:
        sub_id = request.path.rsplit("/", 1)[-1]
        if request.method != "POST" or sub_id not in self._keys:
            return Answer(404, body="no such subscription")
        auth_header = request.headers.get("authorization", "")
        if not (auth_header.startswith("vapid t=") and ",k=" in auth_header.replace(" ", "")):
            return Answer(401, body="VAPID authorization required")
        problem = self._vapid_problem(auth_header)
        if problem:
            return Answer(403, body=problem)
        if request.headers.get("content-encoding") != "aes128gcm":
            return Answer(400, body="Content-Encoding must be aes128gcm")
        if "ttl" not in request.headers:
            return Answer(400, body="TTL header required")
        private, auth = self._keys[sub_id]
        try:
            plain = http_ece.decrypt(
                request.body, private_key=private, auth_secret=auth, version="aes128gcm"
            )
        except Exception as exc:
            return Answer(400, body=f"cannot decrypt: {exc}")
        self.received.append(
            {"subscription": sub_id, "payload": json.loads(plain), "headers": request.headers}
        )
        return None

    def _vapid_problem(self, header: str) -> str:
        """Check the VAPID JWT (ES256) against the key it names, and its audience."""
        fields = dict(part.strip().split("=", 1) for part in header[len("vapid ") :].split(","))
        try:
            head, claims, signature = fields["t"].split(".")
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), _unb64(fields["k"])
            )
            raw = _unb64(signature)
            der = encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except (KeyError, ValueError, InvalidSignature) as exc:
            return f"bad VAPID token: {exc!r}"
        payload = json.loads(_unb64(claims))
        if payload.get("aud") != self.url or not str(payload.get("sub", "")).startswith("mailto:"):
            return f"bad VAPID claims: {payload}"
        return ""

    def default(self, request: Recorded) -> Answer:
        return Answer(201, headers={"Location": f"{self.url}/messages/{secrets.token_hex(6)}"})
