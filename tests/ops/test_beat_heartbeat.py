"""A real beat process records its ticks in Redis and publishes ops.heartbeat; /readyz
and /metrics then show the beat alive."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import current_app
from django.conf import settings
from django.test import Client

from config.beat_lock import LOCK_KEY, redis_client
from config.heartbeat import BEAT_KEY, heartbeat_client
from tests.churnapp.conftest import wait_for
from tests.ops.conftest import WorkerProcess


@pytest.mark.django_db(transaction=True)
def test_beat_ticks_are_visible_in_readiness_and_metrics(scrape):
    client = heartbeat_client()
    client.delete(BEAT_KEY)
    assert redis_client(settings.CELERY_BROKER_URL).get(LOCK_KEY) is None, "a beat runs already"
    with current_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    # the worker-process helper knows how to point a subprocess at the test database
    env = WorkerProcess(name="unused", queues=["default"], env={}).env
    beat = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "beat",
            "-l",
            "WARNING",
            "-S",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile=",
        ],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # when: beat runs for a moment (OPS_HEARTBEAT_SECONDS=1 in the helper's env)
        tick = wait_for(lambda: client.get(BEAT_KEY), timeout=60)
        # then: the tick is recent, and it was a real publish (the heartbeat task waits
        # in the default queue, where no worker listens in this test)
        assert abs(time.time() - float(tick)) < settings.OPS_HEARTBEAT_STALE_SECONDS
        wait_for(lambda: scrape().value("churn_queue_depth", queue="default") >= 1, timeout=30)
        beat_check = Client().get("/readyz").json()["checks"]["beat"]
        assert beat_check["status"] == "ok"
        assert beat_check["lock_holder"] and f"pid {beat.pid}" in beat_check["lock_holder"]
        assert scrape().value("churn_beat_last_tick_timestamp_seconds") >= float(tick)
    finally:
        beat.terminate()
        try:
            output = beat.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            beat.kill()
            output = beat.communicate()[0]
        with current_app.connection_for_write() as conn:
            conn.default_channel.queue_purge("default")
        client.delete(BEAT_KEY)
    assert beat.returncode in (0, -15), output.decode(errors="replace")[-2000:]
