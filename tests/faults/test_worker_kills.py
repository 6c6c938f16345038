"""Celery workers killed -9 at random while messages flow, and restarted: every message
ends sent or (claimed by a dead worker before its request left) unknown, and the
provider saw exactly one request per sent message and none for the others."""

from __future__ import annotations

import random
import time

import pytest

from notifications.models import Message, MessageStatus
from tests.faults.conftest import (
    SEND_ENV,
    leads_make,
    ledger,
    outbox_enqueue,
    outbox_plan,
    status_counts,
    sweep_until_final,
    twilio_channel,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 2
THREADS = 4


def _run(tenant, twilio, processes, *, messages: int, kills: int, leads: int) -> dict:
    # given an outbox of SMS to many leads, and two threaded worker processes
    twilio_channel(tenant, twilio)
    ids = outbox_plan(tenant, leads_make(tenant, leads), messages, prefix="kill")
    workers = [
        processes.worker(f"kill{i}@%h", ["sms"], SEND_ENV, pool="threads", concurrency=THREADS)
        for i in range(WORKERS)
    ]
    started = time.monotonic()
    assert outbox_enqueue(ids) == messages
    rng = random.Random(10)
    killed_pids: list[int] = []
    in_flight_at_kill = 0
    # when a random worker is killed -9 each time another share of the messages went out,
    # and a fresh one takes its place
    for k in range(kills):
        target = messages * (k + 1) // (kills + 2)
        wait_for(
            lambda target=target: (
                Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() >= target
            ),
            timeout=120,
            describe=lambda: (status_counts(ids), processes.logs()),
        )
        index = rng.randrange(len(workers))
        victim = workers[index]
        victim.kill()
        killed_pids.append(victim.pid)
        in_flight_at_kill += Message.objects.filter(
            pk__in=ids, status=MessageStatus.SENDING, claimed_by__endswith=f":{victim.pid}"
        ).count()
        workers[index] = processes.worker(
            f"kill{WORKERS + k}@%h", ["sms"], SEND_ENV, pool="threads", concurrency=THREADS
        )

    # then the sweeper (beat's job, run here every second) re-enqueues what the dead
    # took with them and settles their orphaned claims, until every message is final
    sweep_until_final(ids, processes, timeout=300)
    elapsed = time.monotonic() - started
    book = ledger(ids, twilio)
    assert book.duplicates == 0, book
    assert book.sent_without_request == 0, book
    assert book.requested_not_sent == 0, book
    assert book.requests == book.statuses.get(MessageStatus.SENT, 0)
    # a message is left unknown only when a killed worker held it
    for pk in book.unknown:
        claimed_by = Message.objects.get(pk=pk).claimed_by
        assert int(claimed_by.rsplit(":", 1)[1]) in killed_pids, claimed_by
    figures = {
        "messages": messages,
        "kills": len(killed_pids),
        "in_flight_at_kills": in_flight_at_kill,
        "statuses": book.statuses,
        "provider_requests": book.requests,
        "duplicates": book.duplicates,
        "losses": messages - sum(book.statuses.get(s, 0) for s in book.statuses),
        "seconds": round(elapsed, 1),
    }
    print("worker kills:", figures)
    return figures


def test_workers_killed_at_random_mid_send_lose_nothing_and_send_nothing_twice(
    tenant, twilio, processes, fault_settings, redis_flushed
):
    _run(tenant, twilio, processes, messages=300, kills=3, leads=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_thousand_messages_through_ten_worker_kills(
    tenant, twilio, processes, fault_settings, redis_flushed
):
    _run(tenant, twilio, processes, messages=2000, kills=10, leads=200)
