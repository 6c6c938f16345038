"""A programmable local HTTP server: the base of every provider fake.

    fake = SomeFake().start()          # binds 127.0.0.1 on a free port
    fake.url                           # "http://127.0.0.1:PORT"
    fake.program(Answer(503), Answer(429, headers={"Retry-After": "1"}), Answer(hang=True))
    fake.requests                      # every request seen, in order (Recorded)
    fake.release()                     # let hanging requests go (answers 504)
    fake.outage = lambda request: Answer(503)  # answers every request until set to None
    fake.stop()

Each fake validates the documented request shape first (a bad shape gets the provider's
4xx whatever is programmed), then answers the next programmed Answer, else its default.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | dict | list | str | None = None
    delay: float = 0.0  # seconds to wait before answering
    hang: bool = False  # never answer (until release() or stop())
    method: str | None = None  # only for requests of this method (None: any)
    # The provider acts on the request (its default answer) but answers only after
    # `delay`, or never (`hang`): the request went through, the reply is lost.
    accept: bool = False

    def encoded(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "application/json"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain"
        return json.dumps(self.body).encode(), "application/json"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived
    answered: int | None = None  # the status code sent back (None: no answer yet)
    peer: tuple = ()  # the client's (host, port): one per connection it used

    def json(self):
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class FakeServer:
    """Subclasses implement `respond(request) -> Answer | None`; None means "use the
    programmed answer or the default"."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._answers: deque[Answer] = deque()
        # While set, answers every well-formed request before the programmed answers
        # (a provider outage); returning None lets the request through.
        self.outage: Callable[[Recorded], Answer | None] | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the body waits for
            # the client's delayed ACK (~40 ms) on every kept-alive request.
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:
                    # The client died mid-body (a worker killed -9 while posting): a real
                    # provider never sees a request, so neither is one recorded here.
                    self.close_connection = True
                    return
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    peer=tuple(self.client_address[:2]),
                )
                answer = fake._answer_for(recorded)
                final = fake.default(recorded) if answer.accept else answer
                if answer.hang:
                    fake._release.wait(120)
                    if not answer.accept:
                        final = Answer(504, body={"error": "released"})
                elif answer.delay:
                    fake._release.wait(answer.delay)
                answer = final
                recorded.answered = answer.status
                payload, content_type = answer.encoded()
                try:
                    self.send_response(answer.status)
                    headers = {"Content-Type": content_type, **answer.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- programming -----------------------------------------------------------------
    def program(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def release(self) -> None:
        self._release.set()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._answers.clear()
        self._release = threading.Event()

    def requests_to(self, method: str, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- internals ---------------------------------------------------------------------
    def _answer_for(self, request: Recorded) -> Answer:
        with self._lock:
            self.requests.append(request)
        invalid = self.validate(request)
        if invalid is not None:
            return invalid
        outage = self.outage
        if outage is not None and (answer := outage(request)) is not None:
            return answer
        with self._lock:
            programmed = next(
                (a for a in self._answers if a.method in (None, request.method)), None
            )
            if programmed is not None:
                self._answers.remove(programmed)
        if programmed is not None:
            return programmed
        return self.default(request)

    def validate(self, request: Recorded) -> Answer | None:
        """The provider's answer to a malformed request (None when well formed)."""
        return None

    def default(self, request: Recorded) -> Answer:
        return Answer(200, body={})
