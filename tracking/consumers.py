"""The dashboard's WebSocket: session auth, the tenant's and the agent's groups, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from churnapp.models import Agent
from notifications.realtime import agent_group, tenant_group
from tracking.models import TrackingEvent

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
def _latest_event_id(tenant_id: int) -> int:
    return TrackingEvent.objects.filter(tenant_id=tenant_id).aggregate(m=Max("id"))["m"] or 0


class TrackingConsumer(AsyncJsonWebsocketConsumer):
    """Forwards the tenant's lifecycle events and the agent's own alerts to one page.

    On the wire: a lifecycle event is sent as is (tracking.events.event_payload: it has
    an "id" and a "kind", no "type"); control messages have a "type": "heartbeat",
    "alert" (an agent alert), "resync", "pong".

    The log is the source of truth: every heartbeat carries the tenant's latest event id.
    An event committed a whole heartbeat ago that never reached this socket was dropped
    (channels-redis discards messages for a channel at capacity, so a slow consumer never
    stalls the group); the consumer then says "resync" and closes, and the page reconnects
    and fetches what it missed from /api/tracking/events?after_id=.
    """

    tenant_id: int | None = None
    agent_id: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        membership = None
        if user is not None and user.is_authenticated:
            membership = await _membership(user)
        if membership is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.tenant_id, self.agent_id = membership
        self.joined = [tenant_group(self.tenant_id), agent_group(self.agent_id)]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        latest = await _latest_event_id(self.tenant_id)
        # Everything up to `latest` the page fetches itself; from here on it must arrive.
        self.last_forwarded = latest
        self.expected = latest
        self.heartbeat = asyncio.create_task(self._heartbeat_loop())

    async def disconnect(self, code) -> None:
        task = getattr(self, "heartbeat", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The page may ping to measure the round trip; nothing else is accepted from it.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "at": timezone.now().isoformat()})

    async def tracking_event(self, message: dict) -> None:
        """A group message: a lifecycle event (tenant group) or an agent alert."""
        payload = message.get("event")
        if isinstance(payload, dict):
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
