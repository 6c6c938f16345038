"""Beat and worker heartbeats in Redis, read by /readyz, the admin health page and /metrics."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import redis
from celery.signals import beat_init, before_task_publish, worker_ready, worker_shutdown

from config.beat_lock import redis_client

log = logging.getLogger(__name__)

BEAT_KEY = "churn:ops:beat-tick"
WORKER_KEY_PREFIX = "churn:ops:worker:"
TASK_KEY = "churn:ops:heartbeat-task"

_state = {"in_beat": False, "last_tick": 0.0}
_stop = threading.Event()


def _settings():
    from django.conf import settings

    return settings


def heartbeat_client() -> redis.Redis:
    return redis_client(_settings().REDIS_URL)


def beat_tick_record(client: redis.Redis | None = None, *, at: float | None = None) -> None:
    (client or heartbeat_client()).set(BEAT_KEY, repr(at or time.time()))


def worker_heartbeat_record(
    *, name: str, queues: list[str], client: redis.Redis | None = None
) -> None:
    settings = _settings()
    value = json.dumps({"at": time.time(), "queues": queues, "pid": os.getpid()})
    (client or heartbeat_client()).set(
        WORKER_KEY_PREFIX + name, value, ex=int(settings.OPS_HEARTBEAT_STALE_SECONDS)
    )


def beat_last_tick(client: redis.Redis | None = None) -> float | None:
    value = (client or heartbeat_client()).get(BEAT_KEY)
    return float(value) if value else None


def live_workers(client: redis.Redis | None = None) -> dict[str, dict]:
    """Workers whose heartbeat key has not expired: name -> {"at", "queues", "pid"}."""
    client = client or heartbeat_client()
    keys = sorted(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=500))
    values = client.mget(keys) if keys else []
    return {
        key.removeprefix(WORKER_KEY_PREFIX): json.loads(value)
        for key, value in zip(keys, values, strict=True)
        if value
    }


@beat_init.connect
def _beat_started(sender=None, **kwargs) -> None:
    _state["in_beat"] = True


@before_task_publish.connect
def _beat_published(sender=None, **kwargs) -> None:
    """In the beat process, every publish is a tick that did its job: record when."""
    if not _state["in_beat"]:
        return
    now = time.time()
    if now - _state["last_tick"] < 1.0:
        return
    _state["last_tick"] = now
    try:
        beat_tick_record(at=now)
    except redis.RedisError as exc:
        log.warning("could not record the beat tick: %s", exc)


@worker_ready.connect
def _worker_started(sender=None, **kwargs) -> None:
    """Start the heartbeat thread of this worker (its main process; children share it)."""
    consumer = sender
    name = getattr(consumer, "hostname", None) or f"worker@{socket.gethostname()}"
    try:
        queues = sorted(q.name for q in consumer.task_consumer.queues)
    except AttributeError:
        queues = []
    interval = float(_settings().OPS_HEARTBEAT_SECONDS)
    _stop.clear()

    def run() -> None:
        client = heartbeat_client()
        while True:
            try:
                worker_heartbeat_record(name=name, queues=queues, client=client)
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            if _stop.wait(interval):
                return

    threading.Thread(target=run, name="ops-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _worker_stopping(sender=None, **kwargs) -> None:
    _stop.set()
    name = getattr(sender, "hostname", None)
    if name:
        try:
            heartbeat_client().delete(WORKER_KEY_PREFIX + name)
        except redis.RedisError:
            pass  # the key expires on its own
