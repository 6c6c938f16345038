"""A development backend for every channel: prints the message and reports it sent."""

from __future__ import annotations

import sys

from notifications.backends.base import BaseBackend, SendResult


class ConsoleBackend(BaseBackend):
    provider = "console"

    def send(self, message) -> SendResult:
        stream = self.options.get("stream") or sys.stdout
        stream.write(
            f"[{message.channel}] to {message.to_address or message.recipient}: "
            f"{message.subject + ' | ' if message.subject else ''}{message.body_text}\n"
        )
        stream.flush()
        return SendResult(provider_message_id=f"console-{message.pk}")
