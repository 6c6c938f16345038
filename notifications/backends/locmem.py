"""A test backend for every channel: keeps sent messages in `outbox` in this process."""

from __future__ import annotations

from notifications.backends.base import BaseBackend, SendResult

outbox: list[dict] = []


class LocmemBackend(BaseBackend):
    provider = "locmem"

    def send(self, message) -> SendResult:
        outbox.append(
            {
                "message_id": message.pk,
                "channel": message.channel,
                "to": message.to_address,
                "subject": message.subject,
                "body_text": message.body_text,
                "body_html": message.body_html,
            }
        )
        return SendResult(provider_message_id=f"locmem-{message.pk}")
