"""The dashboard's WebSocket: session auth, the tenant's and the agent's groups, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from churnapp.models import Agent
from notifications.realtime import agent_group, tenant_group
from tracking.frames import frame_writer, text_frames
from tracking.models import TrackingEvent

logger = logging.getLogger(__name__)

# Close codes the page understands (4000-4999 are free for applications).
CLOSE_FORBIDDEN = 4403  # not signed in, or not an active agent of an active tenant
CLOSE_RESYNC = 4408


def heartbeat_seconds() -> float:
    return float(getattr(settings, "TRACKING_WS_HEARTBEAT_SECONDS", 15))


@database_sync_to_async
def _membership(user) -> tuple[int, int] | None:
    """(tenant id, agent id) of a user who is an active agent of an active tenant."""
    agent = (
        Agent.objects.select_related("tenant")
        .filter(user_id=user.pk, is_active=True, tenant__is_active=True)
        .first()
    )
    return (agent.tenant_id, agent.pk) if agent else None


@database_sync_to_async
def _latest_event_id_query(tenant_id: int) -> int:
    return TrackingEvent.objects.filter(tenant_id=tenant_id).aggregate(m=Max("id"))["m"] or 0


# The tenant's latest event id, shared by every socket of the tenant in this process: with
# hundreds of sockets, one query per socket per heartbeat (each a thread hop, and without
# persistent connections a new PostgreSQL connection) swamped the server. A value at most
# a quarter of a heartbeat (and at most a second) old only makes the drop check later by
# that much; concurrent heartbeats wait for one query in flight instead of each running one.
_latest_cache: dict[int, tuple[float, int]] = {}
_latest_inflight: dict[int, asyncio.Future] = {}


async def _latest_event_id(tenant_id: int) -> int:
    ttl = min(1.0, heartbeat_seconds() / 4)
    cached = _latest_cache.get(tenant_id)
    if cached is not None and time.monotonic() - cached[0] < ttl:
        return cached[1]
    loop = asyncio.get_running_loop()
    future = _latest_inflight.get(tenant_id)
    if future is None or future.get_loop() is not loop:
        started = time.monotonic()
        future = asyncio.ensure_future(_latest_event_id_query(tenant_id))
        _latest_inflight[tenant_id] = future

        def done(f: asyncio.Future, started: float = started) -> None:
            if _latest_inflight.get(tenant_id) is f:
                del _latest_inflight[tenant_id]
            if not f.cancelled() and f.exception() is None:
                _latest_cache[tenant_id] = (started, f.result())

        future.add_done_callback(done)
    return await asyncio.shield(future)


class _TenantFanout:
    """The one member of a tenant's group in this process (per event loop), forwarding
    each lifecycle event to every dashboard socket of the tenant here.

    With each socket a group member of its own, every event went through 200 queues, 200
    receive tasks and 200 dispatches (asyncio.wait, a new Task per message, a msgpack
    decode each) before the 200 sends: a fifth of the web process's CPU in a 200-socket
    fan-out, all of it serial on one core. Here the channel layer delivers an event once
    per process and one loop hands its text to each socket (a send to daphne never
    waits on the client: it goes into the socket's transport buffer).

    The layer still bounds what waits for this member (capacity, dropping beyond it); a
    dropped event is missed by every socket of the tenant here, and each notices at its
    next heartbeat and resyncs, as before. The tenant wall is the membership checked at
    connect: a socket joins only the fan-out of its own tenant."""

    def __init__(self, layer, tenant_id: int) -> None:
        self.layer = layer
        self.tenant_id = tenant_id
        self.sockets: set[TrackingConsumer] = set()
        self.ready = asyncio.ensure_future(self._start())
        self.task: asyncio.Task | None = None

    async def _start(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(tenant_group(self.tenant_id), self.channel)
        self.task = asyncio.create_task(self._forward_loop())

    async def _forward_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except Exception:
                # Never end quietly: the sockets here would miss every later event and
                # resync forever. What was lost meanwhile, their heartbeats notice.
                logger.exception("tracking fan-out of tenant %s: receive failed", self.tenant_id)
                await asyncio.sleep(1)
                continue
            frames = _event_frames(message)
            for n, socket in enumerate(list(self.sockets), 1):
                if n % _FANOUT_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                try:
                    if frames is None or not socket.write_frames(message, frames):
                        await socket.tracking_event(message)
                except Exception:
                    # One socket's failure must not cost the others their event; that
                    # socket resyncs at its next heartbeat.
                    logger.exception("tracking fan-out to a socket failed")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.ready
        if self.task is not None:
            self.task.cancel()  # its receive, cancelled, unsubscribes the channel
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            await self.layer.group_discard(tenant_group(self.tenant_id), self.channel)


# A fan-out to many sockets yields to the loop every few of them, so a large tenant's
# broadcast does not hold up every other socket of the process (handshakes, pings,
# other tenants' events) for its whole length. The frames themselves no longer wait for
# the loop: a socket daphne holds gets its bytes from tracking.frames.send_now at once
# (before it, Twisted sent each socket's frame only when the loop turned, and these
# yields were what put the first frames on the wire early).
_FANOUT_YIELD_EVERY = 10

_fanouts: dict[tuple[asyncio.AbstractEventLoop, int], _TenantFanout] = {}


def _event_texts(message: dict) -> list[str] | None:
    """The wire texts a lifecycle-event message carries, in order: one event's
    (tracking.events.broadcast_message, serialized once by the publisher for every
    socket) or those of several committed together (tracking.events._merged); None for a
    message without them (the older shape, an agent alert)."""
    text = message.get("text")
    if isinstance(text, str):
        return [text]
    texts = message.get("texts")
    if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
        return texts
    return None


def _event_frames(message: dict) -> bytes | None:
    """The event's WebSocket frames, built once for every socket (tracking.frames)."""
    texts = _event_texts(message)
    return None if texts is None else text_frames(texts)


async def _fanout_join(consumer: TrackingConsumer) -> None:
    """Start forwarding the tenant's events to `consumer`; returns once the tenant's group
    membership in this process is in place (events committed later reach the socket)."""
    key = (asyncio.get_running_loop(), consumer.tenant_id)
    fanout = _fanouts.get(key)
    if fanout is None:
        fanout = _fanouts[key] = _TenantFanout(consumer.channel_layer, consumer.tenant_id)
    fanout.sockets.add(consumer)
    try:
        await asyncio.shield(fanout.ready)
    except Exception:
        if _fanouts.get(key) is fanout:
            del _fanouts[key]
        raise


async def _fanout_leave(consumer: TrackingConsumer) -> None:
    key = (asyncio.get_running_loop(), consumer.tenant_id)
    fanout = _fanouts.get(key)
    if fanout is None or consumer not in fanout.sockets:
        return
    fanout.sockets.discard(consumer)
    if not fanout.sockets:
        del _fanouts[key]  # before any await: a socket arriving now starts a new one
        await fanout.stop()


def _frame_send(send):
    """The ASGI send under channels' session wrapper, for websocket.send frames.

    The wrapper (AuthMiddlewareStack's SessionMiddleware) saves a session only on an
    http.response.start; for every frame it still reads the lazy session twice to decide
    not to. Per socket and event that was about a tenth of the web process's samples in
    a 200-socket fan-out (py-spy, docs/benchmarks/results.md, broadcast)."""
    while isinstance(getattr(send, "__self__", None), InstanceSessionWrapper):
        send = send.__self__.real_send
    return send


class TrackingConsumer(AsyncJsonWebsocketConsumer):
    """Forwards the tenant's lifecycle events and the agent's own alerts to one page.

    On the wire: a lifecycle event is sent as is (tracking.events.event_payload: it has
    an "id" and a "kind", no "type"); control messages have a "type": "heartbeat",
    "alert" (an agent alert), "resync", "pong".

    The log is the source of truth: every heartbeat carries the tenant's latest event id.
    An event committed a whole heartbeat ago that never reached this socket was dropped
    (the channel layer discards messages for a consumer at capacity, so a slow one never
    stalls the group); the consumer then says "resync" and closes, and the page reconnects
    and fetches what it missed from /api/tracking/events?after_id=.
    """

    tenant_id: int | None = None
    agent_id: int | None = None
    last_forwarded = 0
    expected = 0
    frame_send = None
    frame_writer = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        membership = None
        if user is not None and user.is_authenticated:
            membership = await _membership(user)
        if membership is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.tenant_id, self.agent_id = membership
        # The agent's own alerts come to this socket's channel; the tenant's events through
        # the process's fan-out for the tenant (_TenantFanout), joined once accepted.
        self.joined = [agent_group(self.agent_id)]
        await self.channel_layer.group_add(self.joined[0], self.channel_name)
        await self.accept()
        self.frame_send = _frame_send(self.base_send)
        self.frame_writer = frame_writer(self.frame_send)
        await _fanout_join(self)
        # Fresh, not the shared value: an event that was broadcast before the fan-out
        # joined must be at or below `latest`. Everything up to it the page fetches
        # itself; from here on it must arrive.
        try:
            latest = await _latest_event_id_query(self.tenant_id)
        except BaseException:
            # A failed connect gets no disconnect(): leave the fan-out here.
            await _fanout_leave(self)
            raise
        self.last_forwarded = max(self.last_forwarded, latest)
        self.expected = latest
        self.heartbeat = asyncio.create_task(self._heartbeat_loop())

    async def disconnect(self, code) -> None:
        task = getattr(self, "heartbeat", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.tenant_id is not None:
            await _fanout_leave(self)
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The page may ping to measure the round trip; nothing else is accepted from it.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "at": timezone.now().isoformat()})

    async def dispatch(self, message: dict) -> None:
        """As AsyncConsumer.dispatch, without its `aclose_old_connections()` per message.

        That is a thread hop (sync_to_async, one shared thread) for every message of every
        socket: with 200 sockets, 200 serialized hops per broadcast event, half the web
        process's CPU and most of the fan-out's latency. It guards handlers that use the
        ORM directly; every query here goes through database_sync_to_async, which closes
        stale connections itself, in the thread that holds them."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def write_frames(self, message: dict, frames: bytes) -> bool:
        """Write the fan-out's prepared frames of `message` straight to this socket;
        False when it cannot take them (tracking.frames), and the fan-out then sends the
        message through ASGI (tracking_event)."""
        if self.frame_writer is None or not self.frame_writer(frames):
            return False
        self._forwarded(message)
        return True

    def _forwarded(self, message: dict) -> None:
        self.last_forwarded = max(self.last_forwarded, int(message.get("event_id") or 0))

    async def tracking_event(self, message: dict) -> None:
        """A lifecycle event (from the tenant's fan-out) or an agent alert (agent group)."""
        texts = _event_texts(message)
        if texts is not None:
            # Forwarded unchanged, a frame per event in order, as if they had come one by one.
            self._forwarded(message)
            send = self.frame_send or self.base_send
            for text in texts:
                await send({"type": "websocket.send", "text": text})
            return
        payload = message.get("event")
        if isinstance(payload, dict):
            # The older message shape (a publisher of the previous release during a
            # rolling deploy).
            event_id = int(payload.get("id") or 0)
            self.last_forwarded = max(self.last_forwarded, event_id)
            await self.send_json(payload)
        elif payload == "agent_alert" and message.get("agent_id") == self.agent_id:
            await self.send_json(
                {
                    "type": "alert",
                    "alert": {
                        key: message.get(key)
                        for key in ("message_id", "lead_id", "subject", "body", "created_at")
                    },
                }
            )

    async def _heartbeat_loop(self) -> None:
        interval = heartbeat_seconds()
        while True:
            await asyncio.sleep(interval)
            latest = await _latest_event_id(self.tenant_id)
            if self.last_forwarded < self.expected:
                # Committed at least one interval ago and still not here: dropped.
                await self.send_json(
                    {"type": "resync", "reason": "missed events", "last_event_id": latest}
                )
                await self.close(code=CLOSE_RESYNC)
                return
            self.expected = latest
            await self.send_json(
                {
                    "type": "heartbeat",
                    "at": timezone.now().isoformat(),
                    "last_event_id": latest,
                    "interval_seconds": interval,
                }
            )
