"""Groups over the real Redis channel layer configured in settings."""

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from config.channel_layers import RedisPubSubChannelLayer


def test_group_send_reaches_members_through_redis():
    sender = get_channel_layer()
    assert isinstance(sender, RedisPubSubChannelLayer)
    # A second layer instance stands for another process: what it receives came
    # through Redis, not through the sender's memory.
    receiver = RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    group = f"tenant-test-{uuid.uuid4().hex}"

    async def scenario() -> list[dict]:
        member = await receiver.new_channel()
        await receiver.group_add(group, member)
        await sender.group_send(group, {"type": "tracking.event", "n": 1})
        first = await receiver.receive(member)

        await receiver.group_discard(group, member)
        await sender.group_send(group, {"type": "tracking.event", "n": 2})
        # Sent straight to the channel after the group message: if the discarded
        # member still got n=2 it would arrive first.
        await sender.send(member, {"type": "tracking.event", "n": 3})
        second = await receiver.receive(member)
        return [first, second]

    first, second = async_to_sync(scenario)()

    assert first == {"type": "tracking.event", "n": 1}
    assert second == {"type": "tracking.event", "n": 3}
