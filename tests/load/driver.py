"""The load driver: API ingest and engagement callbacks at fixed rates against a live
server, and the WebSocket client fleet (tests.load.wsclients) in its own process.

Open loop: request k is due at start + k / rate whatever became of the earlier ones,
so a slow server shows as latency and lateness, never as a quietly lower rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from django.conf import settings

from tests.bench.harness import percentile


@dataclass
class Request:
    kind: str  # "ingest" or "callback"
    due: float  # wall time it was due
    started: float
    seconds: float
    status: int  # 0: no answer (the error says why)
    error: str = ""
    items: int = 0


@dataclass
class Traffic:
    requests: list[Request] = field(default_factory=list)

    def of(self, kind: str) -> list[Request]:
        return [r for r in self.requests if r.kind == kind]

    def errors(self, kind: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if (kind is None or r.kind == kind) and (r.error or not 200 <= r.status < 300)
        ]

    def latency_ms(self, kind: str, q: float) -> float:
        return percentile([r.seconds * 1000 for r in self.of(kind)], q)

    def items(self, kind: str) -> int:
        return sum(r.items for r in self.of(kind) if 200 <= r.status < 300)

    def late_ms(self, kind: str, q: float) -> float:
        """How late requests started against their schedule (the driver kept up if ~0)."""
        return percentile([(r.started - r.due) * 1000 for r in self.of(kind)], q)


async def _send(session, kind, method, url, *, due, items=0, **kwargs) -> Request:
    started = time.time()
    t0 = time.perf_counter()
    try:
        async with session.request(method, url, **kwargs) as response:
            body = await response.read()
            seconds = time.perf_counter() - t0
            error = "" if 200 <= response.status < 300 else body[:300].decode(errors="replace")
            return Request(kind, due, started, seconds, response.status, error, items)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Request(kind, due, started, time.perf_counter() - t0, 0, repr(exc), items)


async def _scheduled(n: int, rate: float, start: float, work) -> list[Request]:
    """Call work(k, due) for k in range(n) at start + k / rate, concurrently."""
    tasks = []
    for k in range(n):
        due = start + k / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(work(k, due)))
    return list(await asyncio.gather(*tasks))


async def traffic_run(
    *,
    base_url: str,
    api_key: str,
    batches: Sequence[list[dict]],
    batch_rate: float,
    callbacks: Sequence[str],
    callback_rate: float,
    connections: int = 32,
) -> Traffic:
    """POST every batch to /api/activities/bulk/ at batch_rate per second, and GET every
    callback path at callback_rate per second, both starting now."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Api-Key {api_key}", "Content-Type": "application/json"}
    bodies = [json.dumps({"items": batch}).encode() for batch in batches]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.time() + 0.2

        def ingest(k, due):
            return _send(
                session,
                "ingest",
                "POST",
                f"{base_url}/api/activities/bulk/",
                due=due,
                items=len(batches[k]),
                data=bodies[k],
                headers=headers,
            )

        def callback(k, due):
            return _send(session, "callback", "GET", base_url + callbacks[k], due=due, items=1)

        results = await asyncio.gather(
            _scheduled(len(bodies), batch_rate, start, ingest),
            _scheduled(len(callbacks), callback_rate, start, callback),
        )
    return Traffic(requests=[r for part in results for r in part])


@dataclass
class Deliveries:
    """What the WebSocket fleet received, against what was committed."""

    connected: int
    clients: list[dict]
    expected: dict[int, set[int]]

    def missing(self) -> int:
        return sum(
            len(self.expected.get(c["tenant"], set()) - set(map(int, c["received"])))
            for c in self.clients
        )

    def foreign(self) -> int:
        """Events received that are not of the client's tenant (a wall breach)."""
        return sum(
            len(set(map(int, c["received"])) - self.expected.get(c["tenant"], set()))
            for c in self.clients
        )

    def duplicates(self) -> int:
        return sum(c["duplicates"] for c in self.clients)

    def errors(self) -> list[str]:
        return [e for c in self.clients for e in c["errors"]]

    def error_summary(self) -> dict[str, int]:
        """How many clients saw each kind of error (the text before any detail)."""
        from collections import Counter

        return dict(Counter(e.split(":")[0][:80] for e in self.errors()))

    def delivered(self) -> int:
        return sum(len(c["received"]) for c in self.clients)

    def latencies_ms(self, sent_at: dict[int, float]) -> list[float]:
        """Receive time minus the event's reference time, for every delivery."""
        return [
            (at - sent_at[int(event_id)]) * 1000
            for c in self.clients
            for event_id, at in c["received"].items()
            if int(event_id) in sent_at
        ]

    def last_client_ms(self, sent_at: dict[int, float]) -> list[float]:
        """Per event: until the last client of its tenant had it."""
        last: dict[int, float] = {}
        for c in self.clients:
            for event_id, at in c["received"].items():
                key = int(event_id)
                last[key] = max(last.get(key, 0.0), at)
        return [(at - sent_at[k]) * 1000 for k, at in last.items() if k in sent_at]


class WsClients:
    """The fleet of dashboard sockets in a subprocess (tests.load.wsclients)."""

    def __init__(
        self,
        *,
        ws_url: str,
        clients: Sequence[tuple[int, str]],
        settle_seconds: float = 30,
        connect_concurrency: int = 10,
    ):
        self.dir = tempfile.mkdtemp(prefix="wsclients-")
        self.out = os.path.join(self.dir, "result.json")
        self.spec = {
            "url": ws_url + "/ws/tracking/",
            "origin": "http://127.0.0.1",
            "clients": [{"tenant": t, "cookie": cookie} for t, cookie in clients],
            "settle_seconds": settle_seconds,
            "connect_concurrency": connect_concurrency,
            "out": self.out,
        }
        self.proc: subprocess.Popen | None = None
        self.first_error = ""

    def start(self, timeout: float = 300) -> int:
        path = os.path.join(self.dir, "spec.json")
        with open(path, "w") as handle:
            json.dump(self.spec, handle)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.load.wsclients", path],
            cwd=settings.BASE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._line(timeout)
        if not line.startswith("READY"):
            raise RuntimeError(f"the WebSocket fleet did not connect: {line!r}")
        _, count, *error = line.split(maxsplit=2)
        self.first_error = error[0] if error else ""
        return int(count)

    def stop(self, expected: dict[int, set[int]], timeout: float = 300) -> Deliveries:
        payload = {str(t): sorted(ids) for t, ids in expected.items()}
        self.proc.stdin.write("STOP " + json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if line != "DONE":
            raise RuntimeError(f"the WebSocket fleet did not finish: {line!r}")
        self.proc.wait(timeout=30)
        with open(self.out) as handle:
            result = json.load(handle)
        return Deliveries(result["connected"], result["clients"], expected)

    def _line(self, timeout: float) -> str:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"the WebSocket fleet said nothing in {timeout}s")
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def _post_all(base_url: str, api_key: str, bodies: Sequence[bytes], concurrency: int):
    headers = {"Authorization": f"Api-Key {api_key}", "Content-Type": "application/json"}
    pending = list(reversed(bodies))
    answers: list[Request] = []
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker():
            while pending:
                body = pending.pop()
                now = time.time()
                answers.append(
                    await _send(
                        session,
                        "ingest",
                        "POST",
                        f"{base_url}/api/activities/bulk/",
                        due=now,
                        data=body,
                        headers=headers,
                    )
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def post_all(
    *, base_url: str, api_key: str, batches: Sequence[list[dict]], concurrency: int
) -> tuple[float, list[Request]]:
    """POST every batch to /api/activities/bulk/ as fast as `concurrency` clients can
    (closed loop): (wall seconds from the first request to the last answer, answers)."""
    bodies = [json.dumps({"items": batch}).encode() for batch in batches]
    t0 = time.perf_counter()
    answers = asyncio.run(_post_all(base_url, api_key, bodies, concurrency))
    return time.perf_counter() - t0, answers
