"""Django's ASGI HTTP handler on a bounded pool of persistent request threads.

Django's own ASGIHandler enters a fresh asgiref ThreadSensitiveContext for every
request, so the request's sync code (middleware, views, `request_started` and
`request_finished` receivers) runs in a thread made for that request alone. The
database connection is thread-local, so every request opened a new PostgreSQL
connection (CONN_MAX_AGE could not help: the next request is another thread) and the
old ones stayed open until their threads were collected.

Here each request borrows one of WEB_SYNC_THREADS single-thread executors for the
length of the request and gives it back afterwards. The request's sync code runs in
that executor's one thread, as in Django (one request at a time per thread, so a
request still sees its own connection and transaction), and the thread, its
connection and any other thread-local client outlive the request. Connections are
recycled exactly as under WSGI: Django's `close_old_connections` runs on
`request_started` and `request_finished` in the same thread, honouring CONN_MAX_AGE,
CONN_HEALTH_CHECKS, broken connections and a transaction left open by a failed
request. At most WEB_SYNC_THREADS requests run their sync code at once; the rest wait
for a thread in arrival order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

logger = logging.getLogger(__name__)


def _drop_leaked_transactions() -> None:
    """Close and forget a connection that a request left inside an atomic block.

    Django's close_old_connections closes such a connection, but its wrapper stays
    "in an atomic block, closed in transaction", so every later request on this
    persistent thread would fail. A thread per request never had that problem; this
    keeps it so (the server rolls back the transaction when the socket closes)."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            logger.warning("A request left a transaction open on %r; closing it", conn.alias)
            try:
                conn.close()
            finally:
                del connections[conn.alias]


# The first generation's threshold for the web process (Python's default is 700). A bulk
# request allocates tens of thousands of containers that live until it answers: with the
# default, the ingest benchmark's daphne spent 0.8-1.4 s of 93,000 activities' work (about
# a third of its CPU) in ~800 collections that found nothing to free. 20,000 left 15.
GC_GEN0_THRESHOLD = 20_000
_gc_tuned = False


def _gc_tune() -> None:
    """Once per process, when it serves its first request: freeze what startup built
    (~200,000 objects of Django, DRF and Channels that live as long as the process, so
    that full collections stop walking them) and raise the first generation's threshold.
    Not at import: tests import config.asgi into the test process too."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1 * 2, gen2)


class _ThreadPool:
    """N single-thread executors handed out through an asyncio queue of one loop."""

    def __init__(self, size: int) -> None:
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-sync-{i}")
            for i in range(size)
        ]
        self.free: asyncio.Queue[ThreadPoolExecutor] = asyncio.Queue()
        for executor in self.executors:
            self.free.put_nowait(executor)

    def shutdown(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=False)


class PooledThreadASGIHandler(ASGIHandler):
    """ASGIHandler whose requests run their sync code on `threads` persistent threads.

    Every detail of a request (body reading, `request_started`, the response, streaming,
    disconnects, `request_finished`) stays Django's own `handle()`; only the thread
    sensitive context it runs in changes. The context is given one of the pool's
    executors (asgiref's ThreadSensitiveContext(executor=...)), which it never shuts
    down. If a client disconnect cancels a request while its view still runs, the view
    keeps that executor's only thread until it returns, and the next request borrowing
    the executor queues behind it, so two requests never share a thread at once."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("WEB_SYNC_THREADS must be at least 1")
        super().__init__()
        self.threads = threads
        # One pool per event loop: an asyncio.Queue belongs to one loop (daphne runs
        # one; a test may run several). The pools of closed loops are shut down when
        # the next loop gets its own.
        self._pools: dict[asyncio.AbstractEventLoop, _ThreadPool] = {}

    def _pool(self) -> _ThreadPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            _gc_tune()
            for closed in [other for other in self._pools if other.is_closed()]:
                self._pools.pop(closed).shutdown()
            pool = self._pools[loop] = _ThreadPool(self.threads)
        return pool

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        pool = self._pool()
        executor = await pool.free.get()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # Queued on the executor's one thread before the next request's work (not
            # awaited: a view still running after a disconnect would hold this up).
            executor.submit(_drop_leaked_transactions)
            pool.free.put_nowait(executor)


def get_pooled_asgi_application(threads: int | None = None) -> PooledThreadASGIHandler:
    """What django.core.asgi.get_asgi_application() is, on the pooled handler
    (WEB_SYNC_THREADS threads unless told)."""
    import django
    from django.conf import settings

    django.setup(set_prefix=False)
    return PooledThreadASGIHandler(threads or settings.WEB_SYNC_THREADS)
