"""A real Celery worker, through the real Redis broker, runs our tasks against PostgreSQL."""

import pytest
from django.db import connection, transaction

from churnapp.models import Tenant
from config.celery import app, ping

pytestmark = pytest.mark.django_db(transaction=True)


@app.task(name="tests.tenant_rename", queue="scoring")
def tenant_rename(tenant_id: int, name: str) -> dict:
    """Test task: a write from the worker's own connection."""
    Tenant.objects.filter(pk=tenant_id).update(name=name)
    with connection.cursor() as cursor:
        cursor.execute("select pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]
    return {"backend_pid": backend_pid}


@app.task(name="tests.tenant_name", queue="interventions")
def tenant_name(tenant_id: int) -> str:
    return Tenant.objects.get(pk=tenant_id).name


def test_ping_answers_pong(celery_worker):
    # when
    result = ping.delay()

    # then
    assert result.get(timeout=60) == "pong"
    assert result.successful()


def test_worker_writes_to_postgresql_on_its_own_connection(celery_worker):
    # given
    tenant = Tenant.objects.create(name="Before", slug="worker-write")

    # when
    answer = tenant_rename.delay(tenant.pk, "Renamed by the worker").get(timeout=60)

    # then
    tenant.refresh_from_db()
    assert tenant.name == "Renamed by the worker"
    with connection.cursor() as cursor:
        cursor.execute("select pg_backend_pid()")
        assert answer["backend_pid"] != cursor.fetchone()[0]


def test_task_enqueued_on_commit_sees_the_committed_row(celery_worker):
    # given
    results = []

    # when
    with transaction.atomic():
        tenant = Tenant.objects.create(name="Committed Realty", slug="on-commit")
        transaction.on_commit(lambda: results.append(tenant_name.delay(tenant.pk)))
        assert results == []  # nothing is enqueued while the transaction is open

    # then
    assert results[0].get(timeout=60) == "Committed Realty"


def test_worker_consumes_every_named_queue(celery_worker):
    from django.conf import settings

    consumed = {queue.name for queue in celery_worker.consumer.task_consumer.queues}
    assert consumed == set(settings.CELERY_QUEUE_NAMES)
