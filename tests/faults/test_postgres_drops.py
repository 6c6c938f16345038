"""PostgreSQL drops connections (pg_terminate_backend on the test database's backends) and
refuses new ones for a while, during API calls and sends: the API answers 503 with a
clear JSON error and Retry-After, never 500; a refused batch is not half-written; send
tasks retry; every message goes out exactly once."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psycopg2
import pytest
import requests
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from churnapp.models import LeadActivity
from churnapp.services.api_keys import api_key_create
from notifications.models import Message, MessageStatus
from tests.faults.conftest import (
    SEND_ENV,
    IngestClients,
    leads_make,
    ledger,
    outbox_enqueue,
    outbox_plan,
    status_counts,
    sweep_until_final,
    terminate_backends,
    twilio_channel,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _side_connection(dbname: str | None = None):
    """A plain psycopg2 connection (to the test database unless told), outside Django's."""
    db = connection.settings_dict
    return psycopg2.connect(
        dbname=dbname or db["NAME"],
        user=db.get("USER") or "postgres",
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
    )


@contextmanager
def database_refusing_connections():
    """New connections to the test database are refused and the open ones (but this
    test's own) are terminated, until the block ends: PostgreSQL gone, as clients see it."""
    name = connection.settings_dict["NAME"]
    # (A database cannot refuse connections from a session connected to it.)
    admin = _side_connection("postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        terminate_backends()
        yield
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()


def _batch(lead, prefix: str, n: int = 20) -> dict:
    return {
        "items": [
            {
                "lead_external_id": lead.external_id,
                "kind": "sms_inbound",
                "occurred_at": "2026-01-05T10:00:00Z",
                "source_event_id": f"{prefix}-{i}",
            }
            for i in range(n)
        ]
    }


def _assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert "database" in error["message"].lower()


def test_a_connection_dropped_mid_request_answers_503_and_writes_nothing(
    tenant, processes, redis_flushed
):
    # given the API, and the activity table locked so the ingest blocks mid-transaction
    lead = leads_make(tenant, 1)[0]
    _, api_key = api_key_create(tenant=tenant, name="faults")
    web = processes.daphne({})
    headers = {"Authorization": f"Api-Key {api_key}"}
    url = web.url + "/api/activities/bulk/"
    locker = _side_connection()
    answers: list[requests.Response] = []
    try:
        with locker.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {LeadActivity._meta.db_table} IN EXCLUSIVE MODE")
        post = threading.Thread(
            target=lambda: answers.append(
                requests.post(url, json=_batch(lead, "cut"), headers=headers, timeout=60)
            )
        )
        post.start()
        blocked = wait_for(
            lambda: _backends_waiting_on_a_lock(),
            timeout=60,
            describe=lambda: (answers, web.output()[-2000:]),
        )
        # when PostgreSQL drops that connection (an admin, a failover, a crash)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [blocked[0]])
        post.join(timeout=60)
    finally:
        locker.rollback()
        locker.close()
    # then a clear 503, and none of the batch stored
    [response] = answers
    _assert_unavailable(response)
    assert not LeadActivity.objects.filter(source_event_id__startswith="cut-").exists()
    # and the client's retry of the same batch goes through, whole
    retry = requests.post(url, json=_batch(lead, "cut"), headers=headers, timeout=60)
    assert retry.status_code == 201, retry.text[:500]
    assert LeadActivity.objects.filter(source_event_id__startswith="cut-").count() == 20


def _backends_waiting_on_a_lock() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            [connection.settings_dict["NAME"]],
        )
        return [row[0] for row in cursor.fetchall()]


def _send_retries() -> float:
    text = Client().get("/metrics").content.decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "churn_celery_task_retries_total"
        and s.labels.get("task") == "notifications.message_send"
    )


def test_connections_dropped_and_refused_during_ingest_and_sends(
    tenant, twilio, processes, fault_settings, redis_flushed
):
    # given the API under ingest, and a worker sending an outbox of SMS
    twilio_channel(tenant, twilio)
    leads = leads_make(tenant, 20)
    _, api_key = api_key_create(tenant=tenant, name="faults")
    ids = outbox_plan(tenant, leads, 80, prefix="pg")
    web = processes.daphne({})
    processes.worker("pg-sends@%h", ["sms"], SEND_ENV, pool="threads", concurrency=4)
    retries_before = _send_retries()
    clients = IngestClients(web.url, api_key, [lead.external_id for lead in leads]).start()
    terminated = 0
    try:
        assert outbox_enqueue(ids) == len(ids)
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() >= 10,
            timeout=120,
            describe=lambda: (status_counts(ids), processes.logs()),
        )
        # when every connection to the database is dropped, a few times
        for _ in range(3):
            terminated += terminate_backends()
            time.sleep(0.7)
        # ...and then the database refuses connections for a while
        answered = clients.count()
        with database_refusing_connections():
            wait_for(lambda: clients.count() >= answered + 4, timeout=60)
            time.sleep(2)
        answered = clients.count()
        wait_for(lambda: clients.count() >= answered + 6, timeout=60)
    finally:
        clients.stop()

    # then every message is sent exactly once: retried tasks, and the sweeper
    # (beat's job, run here) for claims cut off after their provider call
    sweep_until_final(ids, processes, timeout=180)
    book = ledger(ids, twilio)
    assert book.duplicates == 0 and book.sent_without_request == 0, book
    assert book.requested_not_sent == 0, book
    assert book.statuses.get(MessageStatus.SENT) == book.requests
    retries = _send_retries() - retries_before
    # the API said 503 (clear, retryable) while the database was away, never 500
    statuses = clients.by_status()
    assert set(statuses) <= {200, 201, 503}, statuses
    assert statuses.get(503, 0) > 0, statuses
    for answer in clients.answers:
        if answer.status == 503:
            assert answer.body["error"]["code"] == "service_unavailable", answer.body
            assert int(answer.headers["Retry-After"]) > 0
    # accepted batches are stored; no batch is half-written
    stored = set(
        LeadActivity.objects.filter(tenant=tenant).values_list("source_event_id", flat=True)
    )
    assert clients.accepted_ids() <= stored
    refused_then_stored = 0
    for answer in clients.answers:
        if answer.status != 503:
            continue
        kept = [sid for sid in answer.source_event_ids if sid in stored]
        assert kept in ([], answer.source_event_ids), answer.source_event_ids
        refused_then_stored += bool(kept)
    print(
        "postgres drops:",
        {
            "messages": len(ids),
            "backends_terminated": terminated,
            "send_task_retries": retries,
            "statuses": book.statuses,
            "provider_requests": book.requests,
            "duplicates": book.duplicates,
            "api_answers": statuses,
            "refused_batches_committed_anyway": refused_then_stored,
            "losses": len(clients.accepted_ids() - stored)
            + len(ids)
            - book.statuses.get("sent", 0),
        },
    )
    assert terminated > 0
