"""A deterministic in-process Celery worker for the simulated clock: it drains the real broker and honours ETAs against the patched time."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field

from django.utils import timezone

log = logging.getLogger(__name__)


@dataclass
class DrainStats:
    executed: int = 0
    failed: int = 0
    held: int = 0
    by_task: dict[str, int] = field(default_factory=dict)
    seconds_by_task: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class ClockWorker:
    """Consumes the project's queues from the real broker and runs each task through its
    real task code (`Task.apply`, synchronously, in this process, so it reads the same
    simulated clock). A task published with a countdown or ETA is held in memory until
    the simulated clock reaches it. Queues are read in a fixed order and each message in
    broker order, so a run is repeatable: a worker in another process would neither share
    the patched clock nor keep the order."""

    def __init__(self, app, queues: list[str]) -> None:
        self.app = app
        self.queues = list(queues)
        self.stats = DrainStats()
        self._held: list[tuple[dt.datetime, int, str, tuple, dict, str]] = []
        self._seq = itertools.count()
        self._conn = app.connection_for_read()
        self._simple = {name: self._conn.SimpleQueue(name) for name in self.queues}

    def purge(self) -> int:
        return sum(q.clear() for q in self._simple.values())

    def close(self) -> None:
        for q in self._simple.values():
            q.close()
        self._conn.release()

    def _nonempty(self) -> list[str]:
        """Queues holding messages, from one pipelined LLEN round trip (polling each queue
        with a GET costs a round trip per queue per poll)."""
        client = self._conn.default_channel.client
        pipe = client.pipeline()
        for name in self.queues:
            pipe.llen(name)
        return [name for name, n in zip(self.queues, pipe.execute(), strict=True) if n]

    def _next(self):
        for name in self._nonempty():
            try:
                return self._simple[name].get(block=False)
            except self._simple[name].Empty:
                continue
        return None

    def drain(self, *, limit: int = 1_000_000) -> int:
        """Run every task that is due now, including the tasks they enqueue, until the
        queues are empty. Returns how many ran."""
        ran = 0
        while ran < limit:
            now = timezone.now()
            if self._held and self._held[0][0] <= now:
                _eta, _seq, name, args, kwargs, task_id = heapq.heappop(self._held)
                self._run(name, args, kwargs, task_id)
                ran += 1
                continue
            message = self._next()
            if message is None:
                break
            headers = message.headers or {}
            name, task_id = headers.get("task"), headers.get("id")
            args, kwargs, _embed = message.decode()
            message.ack()
            eta = headers.get("eta")
            if eta:
                when = dt.datetime.fromisoformat(eta)
                if timezone.is_naive(when):
                    when = timezone.make_aware(when, dt.UTC)
                if when > now:
                    heapq.heappush(
                        self._held, (when, next(self._seq), name, tuple(args), kwargs, task_id)
                    )
                    self.stats.held += 1
                    continue
            self._run(name, args, kwargs, task_id)
            ran += 1
        return ran

    def _run(self, name: str, args, kwargs, task_id: str | None) -> None:
        task = self.app.tasks.get(name)
        self.stats.by_task[name] = self.stats.by_task.get(name, 0) + 1
        if task is None:
            self.stats.failed += 1
            self.stats.failures.append(f"{name}: not registered")
            return
        started = time.monotonic()
        result = task.apply(args=args, kwargs=kwargs, task_id=task_id)
        spent = time.monotonic() - started
        self.stats.seconds_by_task[name] = self.stats.seconds_by_task.get(name, 0.0) + spent
        self.stats.executed += 1
        if result.failed():
            self.stats.failed += 1
            if len(self.stats.failures) < 50:
                self.stats.failures.append(f"{name}{tuple(args)}: {result.result!r}")
            log.warning("simulated task %s failed: %r", name, result.result)

    @property
    def held(self) -> int:
        return len(self._held)
