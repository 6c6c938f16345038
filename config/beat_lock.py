"""Exactly one Celery beat per broker: a Redis key the running beat holds and keeps fresh."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

LOCK_KEY = "churn:celery-beat-lock"
# A beat that dies without releasing (SIGKILL, power loss) blocks the next one this long.
LOCK_TTL_SECONDS = 30

# Compare-and-set in one round trip, so a beat never extends or deletes another's lock.
_REFRESH = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 1
elseif not current then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def lock_redis_url(broker_url: str) -> str:
    """The Redis holding the lock: the broker when it is Redis, else settings.REDIS_URL
    (a RabbitMQ broker has no keys to hold it in)."""
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        return broker_url
    from django.conf import settings

    return settings.REDIS_URL


def redis_client(url: str) -> redis.Redis:
    # kombu's socket transport spells a Unix socket differently from redis-py.
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=10, decode_responses=True)


class BeatLock:
    """The lock one beat process holds while it runs."""

    def __init__(self, redis_url: str, *, key: str = LOCK_KEY, ttl: int = LOCK_TTL_SECONDS) -> None:
        self.client = redis_client(redis_url)
        self.key = key
        self.ttl = ttl
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
        self._stop = threading.Event()

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.owner, nx=True, ex=self.ttl))

    def holder(self) -> str | None:
        return self.client.get(self.key)

    def refresh(self) -> bool:
        """Extend our hold (or take the lock back if it lapsed); False if another beat has it."""
        return bool(self.client.eval(_REFRESH, 1, self.key, self.owner, self.ttl))

    def release(self) -> None:
        self._stop.set()
        try:
            self.client.eval(_RELEASE, 1, self.key, self.owner)
        except redis.RedisError:
            log.warning("could not release the beat lock; it expires in %ss", self.ttl)

    def keep_fresh(self, on_lost: Callable[[str | None], None]) -> threading.Thread:
        """Refresh in a daemon thread; call `on_lost(holder)` once if another beat took over."""

        def run() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    if not self.refresh():
                        on_lost(self.holder())
                        return
                except redis.RedisError as exc:
                    # Redis away for a moment: the lock survives while its TTL lasts.
                    log.warning("beat lock refresh failed: %s", exc)

        thread = threading.Thread(target=run, name="beat-lock", daemon=True)
        thread.start()
        return thread


def beat_lock_holder(redis_url: str, *, key: str = LOCK_KEY) -> str | None:
    """Who holds the beat lock now (e.g. "host pid 123"), or None when no beat runs."""
    return redis_client(redis_url).get(key)
