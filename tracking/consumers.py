"""The dashboard's WebSocket: a signed-in member of a tenant receives that tenant's events."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from notifications.realtime import tenant_group


@database_sync_to_async
def _tenant_id_of(user) -> int | None:
    if user is None or not user.is_authenticated:
        return None
    agent = getattr(user, "agent", None)
    if agent is None or not agent.is_active:
        return None
    return agent.tenant_id


class TrackingConsumer(AsyncJsonWebsocketConsumer):
    """Authenticates by session (AuthMiddlewareStack), joins only the user's tenant group
    and forwards `tracking.event` messages; it accepts nothing from the client."""

    group: str | None = None

    async def connect(self) -> None:
        tenant_id = await _tenant_id_of(self.scope.get("user"))
        if tenant_id is None:
            await self.close(code=4403)
            return
        self.group = tenant_group(tenant_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The stream is one-way; catching up is GET /api/tracking/events?after_id=.
        return None

    async def tracking_event(self, message: dict) -> None:
        await self.send_json(message["event"])
