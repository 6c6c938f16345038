"""A fake GoHighLevel API (Conversations + Contacts) that checks the documented shapes."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time

from tests.fakes.http import Answer, FakeServer, Recorded

CONVERSATIONS_VERSION = "2021-04-15"
CONTACTS_VERSION = "2021-07-28"
MESSAGE_TYPES = {"SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK"}

_WORKFLOW = re.compile(r"^/contacts/([^/]+)/workflow/([^/]+)$")
_TASKS = re.compile(r"^/contacts/([^/]+)/tasks$")


def _error(status: int, message: str) -> Answer:
    return Answer(status, body={"statusCode": status, "message": [message], "error": "Bad Request"})


class GhlFake(FakeServer):
    """Accepts `Authorization: Bearer <token>` and the right `Version` per API.

    `rate_limit` (requests per 10 s) makes it answer 429 with X-RateLimit-* headers
    the way GHL does when a location's burst limit is exceeded."""

    def __init__(self, token: str = "ghl-test-token", rate_limit: int | None = None) -> None:
        super().__init__()
        self.token = token
        self.rate_limit = rate_limit
        self.sent: dict[str, dict] = {}  # messageId -> request body
        self.tasks: dict[str, dict] = {}
        self.workflow_adds: list[tuple[str, str]] = []
        self._by_idempotency_key: dict[str, Answer] = {}
        self._hits: list[float] = []
        self._rl_lock = threading.Lock()

    def _over_limit(self) -> Answer | None:
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        with self._rl_lock:
            self._hits = [t for t in self._hits if now - t < 10]
            if len(self._hits) >= self.rate_limit:
                retry = 10 - (now - self._hits[0])
                return Answer(
                    429,
                    headers={
                        "X-RateLimit-Max": str(self.rate_limit),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Interval-Milliseconds": "10000",
                        "Retry-After": f"{retry:.2f}",
                    },
                    body={"message": "Too many requests"},
                )
            self._hits.append(now)
        return None

    def validate(self, request: Recorded) -> Answer | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(401, body={"statusCode": 401, "message": "Invalid JWT"})
        version = request.headers.get("version")
        expected = (
            CONVERSATIONS_VERSION if request.path.startswith("/conversations") else CONTACTS_VERSION
        )
        if version != expected:
            return _error(400, f"Version header must be {expected}")
        if request.method != "POST":
            return None
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(400, "Content-Type must be application/json")
        try:
            body = request.json() or {}
        except ValueError:
            return _error(400, "body is not JSON")
        if request.path == "/conversations/messages":
            if body.get("type") not in MESSAGE_TYPES:
                return _error(422, "type must be one of " + ", ".join(sorted(MESSAGE_TYPES)))
            if not body.get("contactId"):
                return _error(422, "contactId should not be empty")
            if body["type"] == "SMS" and not body.get("message"):
                return _error(422, "message should not be empty for SMS")
            if body["type"] == "Email" and not (
                body.get("subject") and (body.get("html") or body.get("message"))
            ):
                return _error(422, "an Email needs subject and html or message")
        elif _TASKS.match(request.path):
            for name in ("title", "dueDate", "completed"):
                if name not in body:
                    return _error(422, f"{name} is required")
            try:
                dt.datetime.fromisoformat(str(body["dueDate"]).replace("Z", "+00:00"))
            except ValueError:
                return _error(422, "dueDate must be an ISO 8601 date")
            if not isinstance(body["completed"], bool):
                return _error(422, "completed must be a boolean")
        elif _WORKFLOW.match(request.path):
            if "eventStartTime" in body and not isinstance(body["eventStartTime"], str):
                return _error(422, "eventStartTime must be a string")
        else:
            return Answer(404, body={"statusCode": 404, "message": f"Cannot POST {request.path}"})
        return self._over_limit()

    def default(self, request: Recorded) -> Answer:
        key = request.headers.get("idempotency-key")
        if key and key in self._by_idempotency_key:
            return self._by_idempotency_key[key]
        body = request.json() if request.body else {}
        answer = Answer(404, body={"message": "not found"})
        if request.method == "POST" and request.path == "/conversations/messages":
            message_id = secrets.token_hex(10)
            self.sent[message_id] = body
            answer = Answer(
                201,
                body={
                    "conversationId": "conv-" + body["contactId"],
                    "messageId": message_id,
                    **({"emailMessageId": "em-" + message_id} if body["type"] == "Email" else {}),
                    "msg": "Message queued successfully.",
                },
            )
        elif request.method == "POST" and (m := _TASKS.match(request.path)):
            task_id = secrets.token_hex(10)
            self.tasks[task_id] = {**body, "contactId": m.group(1)}
            answer = Answer(201, body={"task": {"id": task_id, **body, "contactId": m.group(1)}})
        elif request.method == "POST" and (m := _WORKFLOW.match(request.path)):
            self.workflow_adds.append((m.group(1), m.group(2)))
            answer = Answer(200, body={"succeded": True})
        answer.headers.update({"X-RateLimit-Max": str(self.rate_limit or 100)})
        if key:
            self._by_idempotency_key[key] = answer
        return answer
