"""Agent alerts: a live event to the agent's dashboard group over the channel layer."""

from __future__ import annotations

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from notifications.backends.base import BaseBackend, PermanentError, SendResult, TransientError
from notifications.realtime import agent_group, group_send_sync


class ChannelLayerAlertBackend(BaseBackend):
    """The SMS or email copy to the agent is a companion Message of its own (see
    services.messages), so it gets its own retries, suppression and admin row."""

    channel = "agent_alert"
    provider = "channel_layer"

    def send(self, message) -> SendResult:
        if message.agent is None:
            raise PermanentError("an agent alert needs an agent")
        layer = get_channel_layer()
        if layer is None:
            raise PermanentError("no channel layer is configured")
        event = {
            "type": "tracking.event",
            "event": "agent_alert",
            "tenant_id": message.tenant_id,
            "agent_id": message.agent_id,
            "message_id": message.pk,
            "lead_id": message.lead_id,
            "subject": message.subject,
            "body": message.body_text,
            "created_at": message.created_at.isoformat(),
        }
        try:
            group_send_sync(layer, agent_group(message.agent_id), event)
        except ChannelFull as exc:
            raise TransientError("the agent's channel is full") from exc
        except (ConnectionError, OSError, RedisError) as exc:
            raise TransientError(f"channel layer unreachable: {exc}") from exc
        return SendResult(provider_message_id=f"alert-{message.pk}", status="sent")
