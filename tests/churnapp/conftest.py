"""Fixtures for churnapp's API and webhook tests: real key pairs, signed deliveries."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.fixtures_ghl import GhlSigner, ghl_event  # noqa: F401  (re-exported)
from tests.waiting import wait_for  # noqa: F401  (re-exported)


def minutes_ago(minutes: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=minutes)


@pytest.fixture
def scoring_worker(celery_worker):
    """The shared real Celery worker (root conftest), under the scoring tests' name."""
    return celery_worker
