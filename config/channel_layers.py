"""The channel layer: channels-redis's pub/sub layer with a per-channel capacity.

channels-redis's pub/sub layer fans a group message out in memory, into one unbounded
asyncio.Queue per consumer. A consumer that stops reading (a stalled page, a socket
whose client went quiet) would then grow without bound. Here each consumer's queue
holds at most `capacity` messages and drops the newest beyond it, as the list-based
core layer does: the group never stalls, and the dashboard socket that lost a message
notices at its next heartbeat and resyncs from the lifecycle log.
"""

from __future__ import annotations

import asyncio
import logging

import redis
import redis.sentinel
from channels_redis import pubsub
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts

logger = logging.getLogger(__name__)


class _DroppingQueue(asyncio.Queue):
    """put_nowait never raises: a full queue drops the message (the layer's receive
    loop calls put_nowait for every member, and one full member must not stop the rest)."""

    dropped = 0

    def put_nowait(self, item) -> None:
        if self.full():
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "channel layer: a consumer's queue is full, %s dropped", self.dropped
                )
            return
        super().put_nowait(item)


class _BoundedLoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, capacity: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = _DroppingQueue(maxsize=self.capacity)
        await self._get_shard(channel).subscribe(channel)


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """channels_redis.pubsub.RedisPubSubChannelLayer, bounded per consumer."""

    def __init__(self, *args, capacity: int = 1000, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        self._blocking_clients: list[redis.Redis] | None = None

    def group_send_blocking(self, group: str, message: dict) -> None:
        """`group_send` for synchronous code, with no event loop: one PUBLISH on a
        redis-py connection (thread-safe pool, reset after a fork), to the same Redis
        channel the async layer publishes to and its subscribers read.

        `async_to_sync(group_send)` starts an event loop thread and a redis.asyncio
        connection per call, and a loop kept on a thread of its own still wakes it for
        each event; this is one round trip on the calling thread. Raises redis-py's
        errors (RedisError, or ConnectionError / TimeoutError) as they come."""
        kwargs = self._kwargs
        channel = f"{kwargs.get('prefix', 'asgi')}__group__{group}"
        clients = self._blocking_clients
        if clients is None:
            hosts = kwargs.get("hosts", self._args[0] if self._args else None)
            clients = self._blocking_clients = [
                _blocking_client(host) for host in decode_hosts(hosts)
            ]
        clients[_consistent_hash(channel, len(clients))].publish(channel, self.serialize(message))

    def _get_layer(self) -> _BoundedLoopLayer:
        # As the parent's, with the bounded per-loop layer.
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = _BoundedLoopLayer(
                *self._args, capacity=self.capacity, **self._kwargs, channel_layer=self
            )
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer


def _blocking_client(host: dict) -> redis.Redis:
    """A redis-py client for one of the layer's hosts, as channels-redis reads them."""
    host = dict(host)
    if "address" in host:
        return redis.Redis.from_url(host.pop("address"), **host)
    if "master_name" in host:
        master_name = host.pop("master_name")
        sentinel = redis.sentinel.Sentinel(
            host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None)
        )
        return sentinel.master_for(master_name, **host)
    return redis.Redis(**host)
