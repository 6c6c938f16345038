"""The beat lock in the real Redis: one holder at a time, refreshed, released, re-taken."""

import uuid

import pytest
from django.conf import settings

from config.beat_lock import BeatLock, beat_lock_holder


@pytest.fixture
def key():
    key = f"test-beat-lock-{uuid.uuid4().hex}"
    yield key
    BeatLock(settings.REDIS_URL, key=key).client.delete(key)


def _lock(key: str, owner: str) -> BeatLock:
    lock = BeatLock(settings.REDIS_URL, key=key, ttl=30)
    lock.owner = owner
    return lock


def test_second_beat_cannot_take_a_held_lock(key):
    first, second = _lock(key, "host-a pid 1"), _lock(key, "host-b pid 2")

    assert first.acquire()
    assert not second.acquire()
    assert beat_lock_holder(settings.REDIS_URL, key=key) == "host-a pid 1"
    assert first.refresh()
    assert not second.refresh()  # a refresh never steals the lock


def test_release_frees_the_lock_for_the_next_beat(key):
    first, second = _lock(key, "host-a pid 1"), _lock(key, "host-b pid 2")
    first.acquire()

    second.release()  # not the holder: no effect
    assert beat_lock_holder(settings.REDIS_URL, key=key) == "host-a pid 1"
    first.release()

    assert beat_lock_holder(settings.REDIS_URL, key=key) is None
    assert second.acquire()


def test_refresh_retakes_a_lapsed_lock_and_keeps_a_ttl(key):
    lock = _lock(key, "host-a pid 1")
    lock.acquire()
    lock.client.delete(key)  # as if Redis had lost it (restart without persistence)

    assert lock.refresh()
    assert lock.holder() == "host-a pid 1"
    assert 0 < lock.client.ttl(key) <= 30
