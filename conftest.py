"""Shared pytest fixtures: tenants, API clients. Real PostgreSQL and Redis underneath."""

import pytest
from rest_framework.test import APIClient

from churnapp.models import Tenant
from churnapp.services.api_keys import api_key_create

pytest_plugins = ["tests.fixtures_ghl"]


@pytest.fixture
def tenant(db) -> Tenant:
    return Tenant.objects.create(name="Acme Realty", slug="acme", timezone="America/Chicago")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return Tenant.objects.create(name="Other Homes", slug="other", timezone="America/Denver")


def _client_for(tenant: Tenant) -> APIClient:
    _, raw = api_key_create(tenant=tenant, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api_client(tenant) -> APIClient:
    return _client_for(tenant)


@pytest.fixture
def other_api_client(other_tenant) -> APIClient:
    return _client_for(other_tenant)


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (the project's app, the real Redis broker) consuming every queue.

    It runs in a thread with its own database connection, so it sees only committed
    rows: tests using it get a transactional database (real commits, flushed after).
    Queues are purged first, so tasks left by earlier tests do not run here.
    """
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
        queues=settings.CELERY_QUEUE_NAMES,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=60,
    ) as worker:
        yield worker
