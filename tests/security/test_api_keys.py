"""API keys: stored only as a hash, compared in constant time, and rate limited per key
(a counter in the shared Redis, so every web process spends the same budget)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import socket

import pytest
import redis
import time_machine
from django.core.cache import cache
from rest_framework.test import APIClient

from churnapp.api import throttling
from churnapp.api.throttling import rate_parse
from churnapp.models import ApiKey
from churnapp.services import api_keys
from churnapp.services.api_keys import api_key_authenticate, api_key_create

pytestmark = pytest.mark.django_db


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def test_keys_are_stored_hashed(tenant):
    api_key, raw = api_key_create(tenant=tenant, name="crm")
    _, prefix, secret = raw.split("_", 2)
    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    # the secret is nowhere in the row; its SHA-256 is
    assert all(secret not in str(value) for value in row.values())
    assert row["hashed_key"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["prefix"] == prefix
    assert api_key_authenticate(raw_key=raw) == api_key


def test_keys_are_compared_in_constant_time(tenant, monkeypatch):
    api_key, raw = api_key_create(tenant=tenant)
    seen: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    wrong = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    assert api_key_authenticate(raw_key=wrong) is None
    assert api_key_authenticate(raw_key=raw) == api_key
    # both answers came from hmac.compare_digest over the stored hash
    assert [a for a, _ in seen] == [api_key.hashed_key, api_key.hashed_key]


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("600/minute", (600, 60)),
        ("100/s", (100, 1)),
        ("5000/10m", (5000, 600)),
        ("2/day", (2, 86400)),
    ],
)
def test_rate_parse(rate, expected):
    assert rate_parse(rate) == expected


@pytest.mark.parametrize("rate", ["", "fast", "10/fortnight", "-1/s"])
def test_rate_parse_refuses_nonsense(rate):
    with pytest.raises(ValueError):
        rate_parse(rate)


@pytest.fixture
def mid_hour():
    # A fixed window is an hour here; start far from its edge so the test's requests
    # fall in one window.
    with time_machine.travel(dt.datetime(2031, 5, 6, 12, 30, tzinfo=dt.UTC), tick=True):
        yield


def test_each_key_has_its_own_limit_and_429_says_when_to_retry(
    settings, tenant, other_tenant, mid_hour
):
    settings.API_KEY_RATE_LIMIT = "5/hour"
    first, first_raw = api_key_create(tenant=tenant, name="one")
    _, second_raw = api_key_create(tenant=tenant, name="two")
    _, theirs_raw = api_key_create(tenant=other_tenant, name="theirs")
    client = _client(first_raw)

    answers = [client.get("/api/leads/").status_code for _ in range(5)]
    refused = client.get("/api/leads/")

    assert answers == [200] * 5
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert refused.json()["error"]["message"]
    retry_after = int(refused["Retry-After"])
    assert 0 < retry_after <= 3600
    assert abs(retry_after - 30 * 60) < 120  # the window ends at 13:00
    # other keys, of this tenant or another, still have their budget
    assert _client(second_raw).get("/api/leads/").status_code == 200
    assert _client(theirs_raw).get("/api/leads/").status_code == 200
    # the count lives in the shared cache (Redis), where every web process reads it
    window_start = int(dt.datetime(2031, 5, 6, 12, 0, tzinfo=dt.UTC).timestamp())
    assert cache.get(f"throttle:api-key:key:{first.pk}:3600:{window_start}") == 6


def test_webhooks_are_not_throttled(settings, tenant, post_ghl, mid_hour):
    settings.API_KEY_RATE_LIMIT = "1/hour"
    from tests.fixtures_ghl import ghl_event

    tenant.ghl_location_id = "loc-acme"
    tenant.save()
    for _ in range(3):
        response = post_ghl(tenant.slug, ghl_event("ContactCreate", id="c-1"))
        assert response.status_code == 200


def test_limit_fails_open_when_redis_does_not_answer(settings, api_client, monkeypatch):
    settings.API_KEY_RATE_LIMIT = "1/hour"
    # the counters' Redis is a port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    monkeypatch.setitem(
        throttling._clients,
        settings.CACHES["default"]["LOCATION"],
        redis.Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=1),
    )
    assert [api_client.get("/api/leads/").status_code for _ in range(3)] == [200] * 3


def test_a_window_counter_expires_with_its_window(settings, tenant, mid_hour):
    # given
    settings.API_KEY_RATE_LIMIT = "5/hour"
    key, raw = api_key_create(tenant=tenant, name="expiring")

    # when
    assert _client(raw).get("/api/leads/").status_code == 200

    # then: the counter exists once, and Redis drops it after the window (+1 s)
    window_start = int(dt.datetime(2031, 5, 6, 12, 0, tzinfo=dt.UTC).timestamp())
    name = f"throttle:api-key:key:{key.pk}:3600:{window_start}"
    assert cache.get(name) == 1
    assert 0 < throttling._counter_store().ttl(cache.make_key(name)) <= 3601
