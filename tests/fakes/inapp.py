"""A fake brokerage app receiving in-app messages over a signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from tests.fakes.http import Answer, FakeServer, Recorded


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class InAppFake(FakeServer):
    def __init__(self, secret: str = "in-app-secret") -> None:
        super().__init__()
        self.secret = secret
        self.inbox: list[dict] = []

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/hooks/messages"

    def validate(self, request: Recorded) -> Answer | None:
        timestamp = request.headers.get("x-timestamp", "")
        signature = request.headers.get("x-signature", "")
        if not timestamp or not hmac.compare_digest(
            sign(self.secret, timestamp, request.body), signature
        ):
            return Answer(401, body={"error": "bad signature"})
        if abs(time.time() - int(timestamp)) > 300:
            return Answer(401, body={"error": "stale timestamp"})
        return None

    def default(self, request: Recorded) -> Answer:
        body = request.json()
        self.inbox.append(body)
        return Answer(200, body={"id": f"inbox-{len(self.inbox)}", "received": True})

    def report(
        self, url: str, *, event: str, message_id: int, event_id: str, secret: str | None = None
    ) -> requests.Response:
        """The brokerage app calling our callback (`read` or `received`), signed."""
        body = json.dumps({"event": event, "message_id": message_id, "event_id": event_id}).encode()
        timestamp = str(int(time.time()))
        return requests.post(
            url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Timestamp": timestamp,
                "X-Signature": sign(secret or self.secret, timestamp, body),
            },
            timeout=10,
        )
