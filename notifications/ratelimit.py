"""Shared per-provider rate limits in Redis (moving window), one bucket per provider key."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

_lock = threading.Lock()
_limiter: tuple[str, MovingWindowRateLimiter] | None = None


def _get_limiter() -> MovingWindowRateLimiter:
    global _limiter
    with _lock:
        if _limiter is None or _limiter[0] != settings.REDIS_URL:
            storage = storage_from_string(settings.REDIS_URL)
            _limiter = (settings.REDIS_URL, MovingWindowRateLimiter(storage))
        return _limiter[1]


def _item(provider: str) -> RateLimitItem | None:
    spec = settings.NOTIFICATIONS_RATE_LIMITS.get(provider)
    return parse(spec) if spec else None


def ratelimit_acquire(*, provider: str, key: str) -> float | None:
    """Take one slot of the provider's window for `key`. None if granted, else the
    seconds to wait before the window has room again."""
    item = _item(provider)
    if item is None:
        return None
    limiter = _get_limiter()
    bucket = f"{settings.NOTIFICATIONS_RATE_LIMIT_PREFIX}:{key}"
    if limiter.hit(item, bucket):
        return None
    stats = limiter.get_window_stats(item, bucket)
    return max(0.05, stats.reset_time - time.time())


def ratelimit_acquire_many(*, provider: str, key: str, count: int) -> tuple[int, float | None]:
    """Take up to `count` slots of the provider's window for `key` (a batch of sends):
    how many were granted, and when fewer, the seconds to wait for room again."""
    item = _item(provider)
    if item is None or count <= 0:
        return count, None
    limiter = _get_limiter()
    bucket = f"{settings.NOTIFICATIONS_RATE_LIMIT_PREFIX}:{key}"
    # The whole batch in one round trip when the window has room (the common case);
    # else one slot at a time until it is full.
    if count <= item.amount and limiter.hit(item, bucket, cost=count):
        return count, None
    granted = 0
    while granted < count and limiter.hit(item, bucket):
        granted += 1
    if granted == count:
        return count, None
    stats = limiter.get_window_stats(item, bucket)
    return granted, max(0.05, stats.reset_time - time.time())


def ratelimit_clear(*, provider: str, key: str) -> None:
    item = _item(provider)
    if item is not None:
        _get_limiter().clear(item, f"{settings.NOTIFICATIONS_RATE_LIMIT_PREFIX}:{key}")
