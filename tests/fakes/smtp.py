"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, parsed.

server.refuse.add("a@x.test")          # 550 at RCPT for this address
server.rcpt_replies["a@x.test"].append("450 4.2.0 greylisted")  # next RCPT of it
server.data_replies["a@x.test"].append("451 4.3.0 later")  # next DATA to it
server.data_replies["a@x.test"].append(2.5)  # next DATA: accepted, answered 2.5 s late
server.outage = lambda message_id: "421 4.3.2 down"  # every DATA, while set
server.rcpt_seen, server.data_seen     # every RCPT (address, code) / DATA (Message-ID, code)
"""

from __future__ import annotations

import asyncio
import email
from collections import defaultdict, deque
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from config.services import free_port


class _Handler:
    def __init__(self, box: SmtpServer) -> None:
        self.box = box

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = "250 OK"
        if address in self.box.refuse:
            reply = "550 5.1.1 mailbox unavailable"
        elif self.box.rcpt_replies[address]:
            reply = self.box.rcpt_replies[address].popleft()
        self.box.rcpt_seen.append((address, int(reply[:3])))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        message_id = str(parsed.get("Message-ID", ""))
        outage = self.box.outage
        reply: str | float | None = outage(message_id) if outage else None
        scripted = self.box.data_replies[envelope.rcpt_tos[0]] if envelope.rcpt_tos else None
        if reply is None and scripted:
            reply = scripted.popleft()
        if isinstance(reply, str):
            self.box.data_seen.append((message_id, int(reply[:3])))
            return reply
        self.box.messages.append(parsed)
        self.box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.box.data_seen.append((message_id, 250))
        if reply is not None:
            # Accepted for delivery, but the reply comes after the client gave up.
            await asyncio.sleep(reply)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()
        self.rcpt_replies: defaultdict[str, deque[str]] = defaultdict(deque)
        self.data_replies: defaultdict[str, deque[str | float]] = defaultdict(deque)
        self.outage: Callable[[str], str | float | None] | None = None
        self.rcpt_seen: list[tuple[str, int]] = []
        self.data_seen: list[tuple[str, int]] = []
        self.port = free_port()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
