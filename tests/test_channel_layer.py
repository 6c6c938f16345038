"""Groups over the real Redis channel layer configured in settings."""

import asyncio
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


def test_group_send_blocking_reaches_members_of_the_async_layer():
    """The sync publish (no event loop: the broadcast thread, agent alerts) goes to the
    same Redis channel the async layer's members read, serialized as theirs."""
    sender = get_channel_layer()
    receiver = RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    group = f"tenant-test-{uuid.uuid4().hex}"
    other = f"tenant-test-{uuid.uuid4().hex}"

    async def scenario() -> dict:
        member = await receiver.new_channel()
        await receiver.group_add(group, member)
        # From a thread with no loop, as the publisher calls it.
        await asyncio.to_thread(sender.group_send_blocking, other, {"type": "x", "n": 0})
        await asyncio.to_thread(
            sender.group_send_blocking, group, {"type": "tracking.event", "texts": ["a", "b"]}
        )
        return await asyncio.wait_for(receiver.receive(member), 5)

    assert async_to_sync(scenario)() == {"type": "tracking.event", "texts": ["a", "b"]}
