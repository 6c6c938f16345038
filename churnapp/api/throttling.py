"""Per-API-key rate limits: a fixed-window counter per key in the shared Redis cache, so
every web process counts against the same budget. Over the limit: 429 with Retry-After."""

from __future__ import annotations

import logging
import math
import re
import time

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from churnapp.models import ApiKey

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*\s*$", re.I)


_clients: dict[str, redis.Redis] = {}


def _counter_store() -> redis.Redis:
    """One client (one connection pool) per process for the default cache's Redis.

    django.core.cache's clients live per request context; daphne runs every sync
    request in a thread of its own, so each request opened a new Redis connection, and
    cache.add + cache.incr cost three round trips (incr checks that the key exists)."""
    location = settings.CACHES["default"]["LOCATION"]
    client = _clients.get(location)
    if client is None:
        client = _clients[location] = redis.Redis.from_url(
            location, socket_connect_timeout=2, socket_timeout=2
        )
    return client


def rate_parse(rate: str) -> tuple[int, int]:
    """ "600/minute", "100/s", "5000/10m" -> (requests, window seconds). ValueError if not."""
    match = _RATE.match(rate or "")
    if not match:
        raise ValueError(f"{rate!r} is not a rate such as '600/minute' or '100/10s'")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIODS[unit.lower()]


class ApiKeyRateThrottle(BaseThrottle):
    """API_KEY_RATE_LIMIT requests per window for each API key (a dashboard session
    counts per user). Webhook and callback views, authenticated by signatures, have no
    throttle. If Redis cannot answer, the request is let through: the limit protects
    the service, and PostgreSQL, not Redis, decides whether a write is stored."""

    scope_prefix = "throttle:api-key"

    def _ident(self, request) -> str | None:
        if isinstance(request.auth, ApiKey):
            return f"key:{request.auth.pk}"
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        return None

    def allow_request(self, request, view) -> bool:
        self._wait = None
        rate = settings.API_KEY_RATE_LIMIT
        ident = self._ident(request)
        if not rate or ident is None:
            return True
        limit, window = rate_parse(rate)
        now = time.time()
        window_start = int(now // window) * window
        key = f"{self.scope_prefix}:{ident}:{window}:{window_start}"
        try:
            # The key as cache.get names it; one round trip: create with expiry, count.
            pipe = _counter_store().pipeline(transaction=True)
            pipe.set(cache.make_key(key), 0, ex=window + 1, nx=True)
            pipe.incr(cache.make_key(key))
            count = pipe.execute()[1]
        except Exception:  # Redis down or unreachable: fail open, say so once per request
            logger.warning("rate limit store unavailable; request not counted", exc_info=True)
            return True
        if count <= limit:
            return True
        self._wait = max(1, math.ceil(window_start + window - now))
        return False

    def wait(self) -> float | None:
        return self._wait
