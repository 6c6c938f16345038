"""Fixtures for churnapp's tests: a real Celery worker on the scoring queue, helpers."""

import time

import pytest


@pytest.fixture
def scoring_worker(transactional_db):
    """A real Celery worker (the project's app, the real Redis broker) on the "scoring"
    queue, in a thread with its own database connection: it sees committed rows only.
    (The shared `celery_worker` fixture in the root conftest supersedes this after merge.)"""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from config.celery import app

    with app.connection_for_write() as conn:
        for queue in settings.CELERY_QUEUE_NAMES:
            conn.default_channel.queue_purge(queue)
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        queues=["scoring"],
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    """Poll until `condition()` is truthy; returns its value or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")
