"""The sends an intervention transaction planned, handed to notifications together once
it commits.

One transaction may plan one intervention's messages (a real-time rescore: a lead came
back) or hundreds (a batch rescore chunk whose tiers rose, the window evaluator's
escalations). Each planned message is collected here instead of being published one by
one; after commit they go out together through `notifications.messages_dispatch`: a
few, in a worker, are sent right there in the same process (the detection path, where
the publish, the broker hop and a task of their own cost more than the send); many go
through the batch tasks (one per tenant and channel).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from notifications.services.sending import messages_dispatch

_ATTR = "_interventions_planned_sends"
_in_place_allowed = contextvars.ContextVar("interventions_send_in_place", default=True)


@contextlib.contextmanager
def sends_published() -> Iterator[None]:
    """Within this block planned sends are always published, never sent in place: for
    a loop of many small transactions (the window evaluator's escalations) that must not
    wait on a provider call for each, holding up the real-time rescores queued behind it
    on the same queue."""
    token = _in_place_allowed.set(False)
    try:
        yield
    finally:
        _in_place_allowed.reset(token)


@dataclass
class _Planned:
    """The messages of one outermost transaction, and the on_commit hook that sends them."""

    connection: object
    message_ids: list[int] = field(default_factory=list)

    def flush(self) -> None:
        if getattr(self.connection, _ATTR, None) is self:
            delattr(self.connection, _ATTR)
        messages_dispatch(message_ids=self.message_ids, send_here=send_here_limit())


def in_worker_task() -> bool:
    """Whether this code runs inside a task a Celery worker is executing (not an eager
    call, not a web request, not a shell)."""
    from celery import current_task

    return bool(current_task) and not getattr(current_task.request, "is_eager", False)


def send_here_limit() -> int:
    """How many planned messages a transaction may send in its own process after commit:
    INTERVENTIONS_SEND_HERE_MAX in a worker; none elsewhere (a request must not wait on
    a provider) or inside sends_published()."""
    if not _in_place_allowed.get() or not in_worker_task():
        return 0
    return settings.INTERVENTIONS_SEND_HERE_MAX


def planned_sends_dispatch_on_commit(*, message_ids: list[int]) -> None:
    """Send these messages after the current transaction commits, together with every
    other message it plans (none if it rolls back)."""
    if not message_ids:
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        messages_dispatch(message_ids=list(message_ids), send_here=send_here_limit())
        return
    planned = getattr(connection, _ATTR, None)
    # A hook registered inside a savepoint that rolled back is gone with it (and so are
    # the rows it collected): start over.
    if planned is None or not any(hook == planned.flush for _, hook, _ in connection.run_on_commit):
        planned = _Planned(connection)
        setattr(connection, _ATTR, planned)
        # robust: the rows are the outbox; if the broker is down the sweeper sends them.
        transaction.on_commit(planned.flush, robust=True)
        # This commit need not wait for its WAL flush (about 4 ms on the benchmark
        # machine, on the detection path's critical span): nothing it planned leaves
        # before the send's attempt count commits durably, and that flush takes every
        # earlier WAL record with it, these rows included. A database crash before then
        # loses rows nothing has acted on: the next rescore plans them again (same
        # idempotency keys, sticky cohort), and nothing was sent to be sent twice.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
    planned.message_ids.extend(message_ids)
