"""Fixtures for churnapp's API and webhook tests: real key pairs, signed deliveries."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from tests.fixtures_ghl import GhlSigner, ghl_event  # noqa: F401  (re-exported)


def minutes_ago(minutes: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=minutes)


@pytest.fixture
def scoring_worker(celery_worker):
    """The shared real Celery worker (root conftest), under the scoring tests' name."""
    return celery_worker


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    """Poll until `condition()` is truthy; returns its value or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")
