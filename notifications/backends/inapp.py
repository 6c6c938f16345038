"""In-app messages: a signed webhook to the brokerage's own app, which confirms receipt."""

from __future__ import annotations

import json
import time

from django.conf import settings

from notifications.backends.base import ConfigurationError, HttpBackend, PermanentError, SendResult
from notifications.recipients import public_reverse
from notifications.tokens import hmac_signature


class InAppWebhookBackend(HttpBackend):
    channel = "in_app"
    provider = "in_app"

    def secret(self) -> str:
        secret = self.option("secret", "IN_APP_WEBHOOK_SECRET")
        if not secret:
            raise ConfigurationError("no in-app webhook signing secret")
        return secret

    def build_payload(self, message) -> bytes:
        if not self.options.get("url"):
            raise ConfigurationError("no in-app webhook URL (ChannelConfig option 'url')")
        if message.lead is None:
            raise PermanentError("an in-app message needs a lead")
        body = {
            "message_id": message.pk,
            "idempotency_key": message.idempotency_key,
            "contact_id": message.lead.external_id,
            "subject": message.subject,
            "body": message.body_text,
            "html": message.body_html,
            "read_callback_url": public_reverse(
                "notifications:in-app-callback", tenant_slug=self.tenant.slug
            ),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def post(self, message, payload: bytes):
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Timestamp": timestamp,
            "X-Signature": hmac_signature(secret=self.secret(), timestamp=timestamp, body=payload),
            "Idempotency-Key": message.idempotency_key,
            "User-Agent": settings.NOTIFICATIONS_USER_AGENT,
        }
        response = self.http("POST", self.options["url"], data=payload, headers=headers)
        self.raise_for_status(response)
        return response

    def parse_response(self, message, response) -> SendResult:
        try:
            body = response.json()
        except ValueError:
            body = {}
        # A 2xx is the brokerage app's receipt: the message is in the lead's inbox.
        return SendResult(
            provider_message_id=str(body.get("id") or f"in_app-{message.pk}"),
            status="delivered",
            status_code=response.status_code,
            raw=body if isinstance(body, dict) else {},
        )
