"""Redis (broker, channel layer, rate limiter) crashes and comes back empty while the API
ingests and workers send: every activity the API accepted is stored, the API never
answers 5xx for a write it committed, and every planned message goes out exactly once
after Redis returns (the outbox sweeper publishes what the crash lost)."""

from __future__ import annotations

import time

import pytest

from churnapp.models import LeadActivity
from churnapp.services.api_keys import api_key_create
from notifications.models import Message, MessageStatus
from tests.faults.conftest import (
    SEND_ENV,
    IngestClients,
    all_final,
    leads_make,
    ledger,
    outbox_enqueue,
    outbox_plan,
    status_counts,
    twilio_channel,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE_SECONDS = 4


def test_redis_crash_during_ingest_and_sends_loses_nothing_and_sends_nothing_twice(
    tenant, twilio, processes
):
    # given our own Redis, and the API, a worker and beat on it
    redis_server = processes.redis()
    env = {
        **SEND_ENV,
        "REDIS_URL": redis_server.url,
        "NOTIFICATIONS_SWEEP_EVERY_SECONDS": "1",
        "NOTIFICATIONS_SWEEP_AFTER_SECONDS": "3",
        "NOTIFICATIONS_STALE_SENDING_SECONDS": "5",
    }
    twilio_channel(tenant, twilio)
    leads = leads_make(tenant, 30)
    _, api_key = api_key_create(tenant=tenant, name="faults")
    before = outbox_plan(tenant, leads, 60, prefix="before")
    web = processes.daphne(env)
    # sends and sweeps on one worker (the rescoring the ingest enqueues waits in its own
    # queue: scoring is not under test here, and CI has two cores). Prefork, as deployed:
    # a threads pool acks from its task threads, and one ack racing the consumer's
    # reconnect killed the worker ("Unrecoverable error: AttributeError: 'NoneType' object
    # has no attribute 'hostname'" in kombu's redis transport), failing this test in CI.
    #
    # The worker runs under the deployment's restart policy (docker-compose restarts an
    # app container that exits). kombu's Redis transport can still lose the worker to an
    # ack that races the reconnect ("Unrecoverable error: AttributeError: 'NoneType'
    # object has no attribute 'hostname'"): 3 of 9 runs on 2026-12-07, CI's included.
    # What this test holds the system to is the outcome across that: nothing lost,
    # nothing sent twice.
    worker = processes.worker(
        "redis-sends@%h", ["sms", "default"], env, pool="prefork", concurrency=2
    ).restart_on_exit()
    processes.beat(env)
    clients = IngestClients(web.url, api_key, [lead.external_id for lead in leads]).start()
    try:
        assert outbox_enqueue(before, broker_url=redis_server.url) == len(before)
        wait_for(
            lambda: Message.objects.filter(pk__in=before, status=MessageStatus.SENT).count() >= 15,
            timeout=120,
            describe=lambda: (status_counts(before), processes.logs()),
        )
        # when Redis crashes (SIGKILL, no persistence: queues, unacked tasks, locks and
        # rate-limit windows are gone) while ingest and sends go on
        answered_before_crash = clients.count()
        redis_server.kill()
        crashed_at = time.monotonic()
        # ...and more messages are planned meanwhile, their enqueue failing
        during = outbox_plan(tenant, leads, 20, prefix="during")
        lost_enqueues = len(during) - outbox_enqueue(during, broker_url=redis_server.url)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - crashed_at)))
        answered_during_outage = clients.count() - answered_before_crash
        redis_server.start()
        restarted_at = time.monotonic()
        # ingest goes on a little after Redis is back
        count_at_restart = clients.count()
        wait_for(lambda: clients.count() >= count_at_restart + 10, timeout=60)
    finally:
        clients.stop()

    # then every planned message is sent once, the lost ones by the sweeper
    ids = before + during
    wait_for(
        lambda: all_final(ids),
        timeout=180,
        interval=0.5,
        describe=lambda: (status_counts(ids), processes.logs()),
    )
    recovered_after = time.monotonic() - restarted_at
    book = ledger(ids, twilio)
    assert book.statuses == {MessageStatus.SENT: len(ids)}, (book, processes.logs())
    assert book.duplicates == 0 and book.requests == len(ids), book
    # the API accepted writes through the outage and never answered 5xx
    statuses = clients.by_status()
    assert set(statuses) <= {200, 201}, ([a for a in clients.answers if a.status >= 300][:3],)
    accepted = clients.accepted_ids()
    stored = set(
        LeadActivity.objects.filter(tenant=tenant, source_event_id__in=accepted).values_list(
            "source_event_id", flat=True
        )
    )
    assert stored == accepted
    assert answered_during_outage > 0
    print(
        "redis restart:",
        {
            "messages": len(ids),
            "enqueues_lost_in_outage": lost_enqueues,
            "statuses": book.statuses,
            "provider_requests": book.requests,
            "duplicates": book.duplicates,
            "api_answers": statuses,
            "api_answers_during_outage": answered_during_outage,
            "activities_accepted": len(accepted),
            "activities_stored": len(stored),
            "losses": len(accepted - stored) + len(ids) - book.statuses.get("sent", 0),
            "seconds_to_recover_after_restart": round(recovered_after, 1),
            "worker_restarts": worker.restarts,
        },
    )
