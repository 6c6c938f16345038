"""End to end with real Celery workers, real Redis and PostgreSQL, and the local fakes."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import transaction

from notifications.models import DeliveryAttempt, Message, MessageStatus
from notifications.services import message_request
from notifications.services.sending import outbox_sweep
from notifications.tasks import message_send
from notifications.tasks import outbox_sweep as outbox_sweep_task
from tests.fakes.http import Answer
from tests.notifications.conftest import (
    ALL_QUEUES,
    channel_config,
    ghl_config,
    template_make,
    wait_for,
)
from tests.processes import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)

GHL_SMS = "notifications.backends.ghl.GhlSmsBackend"
SETTLED = {
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.FAILED,
    MessageStatus.DEAD,
    MessageStatus.SUPPRESSED,
    MessageStatus.UNKNOWN,
}


@pytest.fixture
def threaded_worker(transactional_db, redis_flushed):
    """A real worker with a 4-thread pool, so duplicate deliveries really race."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=ALL_QUEUES,
        loglevel="WARNING",
    ) as worker:
        yield worker


def _plan(tenant, lead, n: int, **kwargs) -> list[Message]:
    with transaction.atomic():
        return [
            message_request(
                tenant=tenant,
                channel="sms",
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=f"m-{i}",
                **kwargs,
            )
            for i in range(n)
        ]


def test_duplicate_task_deliveries_make_exactly_one_provider_request_per_message(
    tenant, lead, ghl_fake, threaded_worker
):
    # given a provider that answers slowly, so duplicates overlap the first send
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    template_make(tenant, "sms")
    ghl_fake.program(
        *[
            Answer(201, body={"conversationId": "c", "messageId": f"id-{i}"}, delay=0.2)
            for i in range(6)
        ]
    )
    messages = _plan(tenant, lead, 6)
    # when every task is delivered three times in all (redeliveries, a sweeper race)
    for message in messages:
        for _ in range(2):
            message_send.apply_async(args=[message.pk], queue="sms")
    # then
    wait_for(lambda: Message.objects.filter(status=MessageStatus.SENT).count() == 6)
    keys = Counter(r.headers["idempotency-key"] for r in ghl_fake.requests)
    assert keys == Counter({f"m-{i}": 1 for i in range(6)})
    assert DeliveryAttempt.objects.count() == 6


def test_a_5xx_storm_retries_then_falls_back_to_email(
    tenant, lead, ghl_fake, smtp_server, settings, celery_worker
):
    # given GHL failing with 5xx on every request, and email over a real SMTP server
    settings.NOTIFICATIONS_MAX_ATTEMPTS = 3
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    channel_config(tenant, "email", "notifications.backends.email.DjangoEmailBackend")
    template_make(tenant, "sms")
    template_make(tenant, "email")
    ghl_fake.program(*[Answer(500, body={"message": "upstream down"}) for _ in range(10)])
    # when
    [message] = _plan(tenant, lead, 1, fallback_channels=["email"], metadata={"intervention_id": 4})
    # then
    wait_for(
        lambda: Message.objects.filter(fallback_of=message, status=MessageStatus.SENT).exists()
    )
    message.refresh_from_db()
    assert message.status == MessageStatus.DEAD and message.attempts == 3
    assert len(ghl_fake.requests) == 3
    assert [
        a.status_code for a in DeliveryAttempt.objects.filter(message=message).order_by("number")
    ] == [500, 500, 500]
    fallback = Message.objects.get(fallback_of=message)
    assert fallback.channel == "email" and fallback.metadata == {"intervention_id": 4}
    assert [m["To"] for m in smtp_server.messages] == [lead.email]


def test_the_sweeper_re_enqueues_a_message_whose_enqueue_was_lost(
    tenant, lead, ghl_fake, settings, celery_worker, django_capture_on_commit_callbacks
):
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    template_make(tenant, "sms")
    settings.NOTIFICATIONS_SWEEP_AFTER_SECONDS = 0
    # the process died between commit and publish: the on_commit callback never ran
    with django_capture_on_commit_callbacks(execute=False):
        [message] = _plan(tenant, lead, 1)
    assert Message.objects.get(pk=message.pk).status == MessageStatus.QUEUED
    outbox_sweep_task.apply_async(queue="default")
    wait_for(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.SENT)
    assert len(ghl_fake.requests) == 1


def _worker_process(queues: str) -> WorkerProcess:
    env = {
        "PUBLIC_BASE_URL": "http://testserver",
        # Short, so the restarted worker gets the killed worker's unacked task back.
        "CELERY_VISIBILITY_TIMEOUT": "1",
        "NOTIFICATIONS_HTTP_READ_TIMEOUT": "120",
    }
    return WorkerProcess(name=f"{queues}-kill@%h", queues=queues.split(","), env=env).start()


def test_a_worker_killed_mid_send_and_restarted_sends_nothing_twice(
    tenant, lead, ghl_fake, settings, redis_flushed
):
    # given two planned SMS; the provider hangs on the first request
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    template_make(tenant, "sms")
    ghl_fake.program(Answer(hang=True))
    first, second = _plan(tenant, lead, 2)
    worker = _worker_process("sms")
    try:
        # when the worker is killed -9 while its request is out
        wait_for(lambda: len(ghl_fake.requests) == 1, timeout=60)
        assert Message.objects.get(pk=first.pk).status == MessageStatus.SENDING
        worker.kill()
        worker.close()
        # and a new worker starts (and gets the unacked tasks back)
        worker = _worker_process("sms")
        wait_for(lambda: Message.objects.get(pk=second.pk).status == MessageStatus.SENT, timeout=60)
        # then the sweeper settles the orphaned claim as unknown, never re-queues it
        settings.NOTIFICATIONS_STALE_SENDING_SECONDS = 0
        result = outbox_sweep()
        assert result.stale_to_unknown == 1
        first.refresh_from_db()
        assert first.status == MessageStatus.UNKNOWN and "worker died" in first.status_reason
        # the killed worker's unacked task comes back to the new worker after the
        # visibility timeout, finds the claim taken, and does nothing
        wait_for(
            lambda: redis_flushed.hlen("unacked") == 0 and redis_flushed.llen("sms") == 0,
            timeout=45,
        )
        message_send.apply_async(args=[first.pk], queue="sms")
        outbox_sweep()
        wait_for(
            lambda: redis_flushed.llen("sms") == 0 and redis_flushed.hlen("unacked") == 0,
            timeout=30,
        )
    finally:
        ghl_fake.release()
        worker.close()
    keys = Counter(r.headers["idempotency-key"] for r in ghl_fake.requests)
    assert keys == Counter({"m-0": 1, "m-1": 1})
    assert Message.objects.get(pk=first.pk).status == MessageStatus.UNKNOWN
