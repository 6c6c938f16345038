"""The world's end of the wire: a local HTTP server speaking GHL's Conversations and Contacts shapes, which records every send for the world to read."""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORKFLOW = re.compile(r"^/contacts/([^/]+)/workflow/([^/]+)$")
_TASKS = re.compile(r"^/contacts/([^/]+)/tasks$")


@dataclass(frozen=True)
class Received:
    """One request GHL would have acted on: a message to a contact, a task, a workflow add."""

    kind: str  # "SMS", "Email", "task", "workflow"
    contact_id: str
    provider_id: str
    body: dict


class WorldEndpoint:
    """Binds 127.0.0.1 on a free port. GHL backends pointed at `url` (ChannelConfig option
    base_url) send here; `take()` hands the world what arrived since the last call. It
    checks the shapes our GHL backends must send (Bearer token, JSON, contactId) and
    answers as GHL does, so a malformed send fails here as it would there."""

    def __init__(self, token: str = "sim-ghl-token") -> None:
        self.token = token
        self._lock = threading.Lock()
        self._inbox: list[Received] = []
        self.total = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> WorldEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = endpoint.handle(self.path, dict(self.headers), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("authorization") != f"Bearer {self.token}":
            return 401, {"statusCode": 401, "message": "Invalid JWT"}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"statusCode": 400, "message": ["body is not JSON"]}
        provider_id = secrets.token_hex(10)
        if path == "/conversations/messages":
            if body.get("type") not in ("SMS", "Email") or not body.get("contactId"):
                return 422, {"statusCode": 422, "message": ["type and contactId are required"]}
            received = Received(body["type"], body["contactId"], provider_id, body)
            answer = {
                "conversationId": "conv-" + body["contactId"],
                "messageId": provider_id,
                "msg": "Message queued successfully.",
            }
            status = 201
        elif match := _TASKS.match(path):
            for name in ("title", "dueDate", "completed"):
                if name not in body:
                    return 422, {"statusCode": 422, "message": [f"{name} is required"]}
            received = Received("task", match.group(1), provider_id, body)
            answer = {"task": {"id": provider_id, **body, "contactId": match.group(1)}}
            status = 201
        elif match := _WORKFLOW.match(path):
            received = Received("workflow", match.group(1), match.group(2), body)
            answer = {"succeded": True}
            status = 200
        else:
            return 404, {"statusCode": 404, "message": f"Cannot POST {path}"}
        with self._lock:
            self._inbox.append(received)
            self.total += 1
        return status, answer

    def take(self) -> list[Received]:
        with self._lock:
            items, self._inbox = self._inbox, []
        return items
