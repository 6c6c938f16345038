"""Hand best-effort follow-up work to one background thread per process.

Some after-commit work is only a hint that something should happen soon: a lead's
real-time rescore after new inbound activity (the hourly run scores it anyway) is the
case in point. Enqueueing that Celery task from the committing thread is a broker round
trip (about 1 ms, most of it kombu) inside every ingest request and callback, paid by
the caller that is waiting for its answer. Here the caller only hands the call over; a
thread of this process makes it, in the order given.

What this trades: work handed over but not yet run is lost if the process dies in that
moment (SIGKILL; an orderly exit flushes it). Use it only for work whose loss the
system already tolerates (on_commit(..., robust=True) callers, which log a broker error
and go on); anything that must happen goes through an outbox row instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class _Handoff:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="handoff", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            name, call = self.queue.get()
            try:
                call()
            except Exception:
                logger.exception("handed-off call %s failed", name)

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far has run; False on timeout."""
        done = threading.Event()
        self.queue.put(("flush", done.set))
        return done.wait(timeout)


_handoff: _Handoff | None = None
_lock = threading.Lock()


def _get() -> _Handoff:
    global _handoff
    with _lock:
        # A forked child (a prefork worker) inherits the object but not the thread.
        if _handoff is None or _handoff.pid != os.getpid():
            _handoff = _Handoff()
            atexit.register(_flush_at_exit, _handoff)
        return _handoff


def _flush_at_exit(handoff: _Handoff) -> None:
    if handoff.pid == os.getpid() and handoff.thread.is_alive():
        handoff.flush(timeout=5.0)


def handoff(call: Callable[[], object], *, name: str = "") -> None:
    """Run `call()` soon on this process's handoff thread; exceptions are logged."""
    _get().queue.put((name or getattr(call, "__name__", "call"), call))


def handoff_flush(timeout: float = 5.0) -> bool:
    """Block until this process's handed-off calls so far have run (tests, shutdown)."""
    if _handoff is None or _handoff.pid != os.getpid():
        return True
    return _handoff.flush(timeout)
