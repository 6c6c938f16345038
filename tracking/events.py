"""Append a lifecycle event and broadcast it to the tenant's dashboard group after commit."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import queue
import threading
import time

from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from churnapp.prepared import execute_prepared
from notifications.metrics import broadcast_lag_observe
from notifications.realtime import group_send_sync, tenant_group
from tracking.models import TrackingEvent

logger = logging.getLogger(__name__)

BROADCAST_TYPE = "tracking.event"
# At most this many events waiting in a process's publisher go out in one group message.
BROADCAST_BATCH = 100


def event_payload(event: TrackingEvent) -> dict:
    """The JSON shape of an event on the wire (WebSocket and the resync API)."""
    return {
        "id": event.id,
        "kind": event.kind,
        "lead_id": event.lead_id,
        "intervention_id": event.intervention_id,
        "message_id": event.message_id,
        "escalation_id": event.escalation_id,
        "stage": event.stage,
        "channel": event.channel,
        "data": event.data,
        "occurred_at": event.occurred_at.isoformat(),
    }


_EVENT_INSERT = (
    f"INSERT INTO {TrackingEvent._meta.db_table} (tenant_id, lead_id, intervention_id,"
    " message_id, escalation_id, kind, stage, channel, data, occurred_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id"
)


def tracking_event_record(
    *,
    tenant_id: int,
    kind: str,
    lead_id: int | None = None,
    intervention_id: int | None = None,
    message_id: int | None = None,
    escalation_id: int | None = None,
    stage: int | None = None,
    channel: str = "",
    data: dict | None = None,
    occurred_at: dt.datetime | None = None,
) -> TrackingEvent:
    """Append one event in the caller's transaction and broadcast it once that commits."""
    # Signal details may carry datetimes or Decimals; the log and the wire hold JSON.
    text = json.dumps(data or {}, cls=DjangoJSONEncoder)
    event = TrackingEvent(
        tenant_id=tenant_id,
        kind=kind,
        lead_id=lead_id,
        intervention_id=intervention_id,
        message_id=message_id,
        escalation_id=escalation_id,
        stage=stage,
        channel=channel or "",
        data=json.loads(text),
        occurred_at=occurred_at or timezone.now(),
    )
    # Plain SQL, prepared (churnapp.prepared): every status change and engagement appends
    # one, in the transaction of a callback or a send; the ORM's create compiled its
    # INSERT anew each time. No
    # post_save is sent, and nothing listens to one for this model.
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            [("churn_tracking_event_insert", _EVENT_INSERT)],
            [
                tenant_id,
                lead_id,
                intervention_id,
                message_id,
                escalation_id,
                kind,
                stage,
                event.channel,
                text,
                event.occurred_at,
            ],
        )
        event.id = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias
    tracking_event_send_on_commit(tenant_id=tenant_id, payload=event_payload(event))
    return event


def tracking_events_record(*, events: list[dict]) -> list[TrackingEvent]:
    """`tracking_event_record` for many events (each a dict of its arguments) in one
    INSERT, written and broadcast in the order given: a scoring chunk's tier changes
    were one INSERT each."""
    if not events:
        return []
    now = timezone.now()
    rows: list[TrackingEvent] = []
    texts: list[str] = []
    for e in events:
        text = json.dumps(e.get("data") or {}, cls=DjangoJSONEncoder)
        texts.append(text)
        rows.append(
            TrackingEvent(
                tenant_id=e["tenant_id"],
                kind=e["kind"],
                lead_id=e.get("lead_id"),
                intervention_id=e.get("intervention_id"),
                message_id=e.get("message_id"),
                escalation_id=e.get("escalation_id"),
                stage=e.get("stage"),
                channel=e.get("channel") or "",
                data=json.loads(text),
                occurred_at=e.get("occurred_at") or now,
            )
        )
    columns = (
        "tenant_id",
        "lead_id",
        "intervention_id",
        "message_id",
        "escalation_id",
        "kind",
        "stage",
        "channel",
        "occurred_at",
    )
    with connection.cursor() as cursor:
        # Ids come from one sequence in the order of the SELECT, so sorted they match
        # the events in order.
        cursor.execute(
            f"INSERT INTO {TrackingEvent._meta.db_table} ({', '.join(columns)}, data)"
            f" SELECT {', '.join(f'e.{c}' for c in columns)}, e.data::jsonb"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::bigint[], %s::text[], %s::int[], %s::text[], %s::timestamptz[], %s::text[])"
            f" WITH ORDINALITY AS e({', '.join(columns)}, data, n) ORDER BY e.n RETURNING id",
            [[getattr(r, c) for r in rows] for c in columns] + [texts],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
    for event, pk in zip(rows, ids, strict=True):
        event.id = pk
        event._state.adding = False
        event._state.db = connection.alias
    items = [(event.tenant_id, event_payload(event)) for event in rows]
    transaction.on_commit(lambda: _publish_many(items))
    return rows


class _Publisher:
    """One thread per process publishing broadcasts in order, on a connection it keeps.

    `async_to_sync(group_send)` from a worker or request thread starts a thread, a loop
    and a Redis connection for every call; committing work that announces three events
    paid that three times before its next step (the send task's enqueue) ran. Here the
    committing thread only puts the event on a queue. The thread is plain: it publishes
    with the layer's `group_send_blocking` (config.channel_layers), one PUBLISH per
    group's waiting events. An event loop on this thread cost each event a wake-up
    through the loop's self-pipe and redis.asyncio's machinery, CPU the next request
    of a web process waited for (docs/benchmarks/tracking-write.md, session 8)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="tracking-broadcast", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            # Whatever else is already waiting goes along: a send chunk commits fifty
            # events at once, and one PUBLISH per event was a fifth of a send worker's
            # CPU. Each group's events stay in order, in one group message.
            while len(items) < BROADCAST_BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(items)
            finally:
                for _ in items:
                    self.queue.task_done()

    def _send(self, items: list[tuple[str, dict, dt.datetime]]) -> None:
        by_group: dict[str, list[tuple[dict, dt.datetime]]] = {}
        for group, message, handed_at in items:
            by_group.setdefault(group, []).append((message, handed_at))
        for group, entries in by_group.items():
            try:
                layer = get_channel_layer()
                if layer is not None:
                    group_send_sync(layer, group, _merged([m for m, _ in entries]))
                    # committed (handed over here) -> published: what the live
                    # dashboard's events wait for in this process, the metric's
                    # "dashboard" stream.
                    for _, handed_at in entries:
                        broadcast_lag_observe(occurred_at=handed_at, stream="dashboard")
            except Exception:
                # The dashboard resyncs from /api/tracking/events; a lost broadcast must
                # never fail the committed work that produced it.
                logger.exception(
                    "tracking broadcast of events %s failed", [m["event_id"] for m, _ in entries]
                )

    def publish_many(self, items: list[tuple[str, dict]]) -> None:
        """Queue (group, message) pairs, in order."""
        now = timezone.now()
        for group, message in items:
            self.queue.put((group, message, now))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every event handed over so far is published (or `timeout`)."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("tracking broadcasts not published in time")
                self.queue.all_tasks_done.wait(left)


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def _get_publisher() -> _Publisher:
    global _publisher
    with _publisher_lock:
        # A forked child (a prefork worker) inherits the object but not the thread.
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = _Publisher()
            atexit.register(_flush_at_exit, _publisher)
        return _publisher


def _flush_at_exit(publisher: _Publisher) -> None:
    if publisher.pid == os.getpid() and publisher.thread.is_alive():
        try:
            publisher.flush(timeout=2.0)
        except Exception:  # noqa: BLE001 - at exit; the dashboard resyncs
            pass


def tracking_broadcasts_flush(timeout: float = 5.0) -> None:
    """Block until this process's broadcasts so far are published (tests, shutdown)."""
    if _publisher is not None and _publisher.pid == os.getpid():
        _publisher.flush(timeout)


def broadcast_message(payload: dict) -> dict:
    """The group message for one lifecycle event: its WebSocket text, serialized once here.

    Every dashboard socket of the tenant sends the same text; serializing it once per
    event rather than once per socket (and handing each consumer one short string to
    unpack instead of the whole event) is most of what a 200-socket fan-out costs the
    web process. `event_id` lets the consumer track what it forwarded (the heartbeat's
    drop check) without parsing the text."""
    return {"type": BROADCAST_TYPE, "event_id": int(payload["id"]), "text": json.dumps(payload)}


def _merged(messages: list[dict]) -> dict:
    """One group message for a group's waiting events, in order: a single event as
    broadcast_message made it, several as their texts in one list (`texts`), with the
    last event's id as `event_id`. The consumer sends each text as a frame of its own."""
    if len(messages) == 1:
        return messages[0]
    return {
        "type": BROADCAST_TYPE,
        "event_id": max(m["event_id"] for m in messages),
        "texts": [m["text"] for m in messages],
    }


def _publish_many(items: list[tuple[int, dict]]) -> None:
    """Hand (tenant id, payload) pairs to this process's publisher in one call."""
    _get_publisher().publish_many(
        [(tenant_group(tenant_id), broadcast_message(payload)) for tenant_id, payload in items]
    )


def tracking_event_send_rollback_unsafe(*, tenant_id: int, payload: dict) -> None:
    """Publish now, whatever becomes of the current transaction. Use the on_commit form:
    this one may announce an event that then rolls back. Returns once the event is handed
    to this process's publisher thread, which sends events in the order given."""
    _publish_many([(tenant_id, payload)])


def tracking_event_send_on_commit(*, tenant_id: int, payload: dict) -> None:
    """Publish to the tenant's group after the current transaction commits (never if it
    rolls back)."""
    transaction.on_commit(
        lambda: tracking_event_send_rollback_unsafe(tenant_id=tenant_id, payload=payload)
    )
