"""The RabbitMQ switch: CELERY_BROKER_URL=amqp://... runs the worker round trip (a ping,
a real send) and the queue-depth gauge reads RabbitMQ. Skipped when no RabbitMQ listens
on 127.0.0.1:5672, except under CI=true, where .ci/run starts one and its absence fails."""

from __future__ import annotations

import os
import uuid

import pytest
from kombu import Connection

from config.celery import app, ping
from config.metrics import queue_depths
from notifications.models import Message
from notifications.tasks import message_send
from tests.churnapp.conftest import wait_for
from tests.fakes.smtp import SmtpServer

AMQP_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbitmq_reachable() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
        return True
    except (OSError, Exception):
        return False


@pytest.fixture
def amqp_url():
    if not _rabbitmq_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} (.ci/run starts it)")
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL}")
    return AMQP_URL


@pytest.fixture
def private_queues(amqp_url):
    """Queue names of this run only: RabbitMQ's vhost is shared with other users."""
    names = [f"ops-test-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    yield names
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except conn.channel_errors:
                channel = conn.channel()


@pytest.mark.django_db(transaction=True)
def test_worker_round_trip_over_rabbitmq(amqp_url, private_queues, worker_process, tenant):
    from churnapp.factories import LeadFactory

    work_queue, idle_queue = private_queues
    smtp = SmtpServer().start()
    try:
        worker = worker_process(
            name="rabbit@%h",
            queues=[work_queue],
            env={
                "CELERY_BROKER_URL": amqp_url,
                "NOTIFICATIONS_EMAIL_CHANNEL_BACKEND": (
                    "notifications.backends.email.DjangoEmailBackend"
                ),
                "EMAIL_HOST": "127.0.0.1",
                "EMAIL_PORT": str(smtp.port),
            },
        )
        with app.connection_for_write(url=amqp_url) as conn:
            # when: a ping crosses RabbitMQ to the worker (its answer comes back via Redis)
            result = ping.apply_async(queue=work_queue, connection=conn)
            assert result.get(timeout=90) == "pong", worker.output()
            # and a real send goes the same way
            message = Message.objects.create(
                tenant=tenant,
                lead=LeadFactory(tenant=tenant),
                channel="email",
                subject="Hello",
                body_text="Still looking?",
                idempotency_key="rabbit-1",
            )
            message_send.apply_async(args=[message.id], queue=work_queue, connection=conn)
            wait_for(lambda: Message.objects.get(pk=message.pk).status == "sent", timeout=60)
            assert len(smtp.messages) == 1
            # the queue-depth gauge reads RabbitMQ: three tasks wait where nobody listens
            for _ in range(3):
                ping.apply_async(queue=idle_queue, connection=conn)
        depths = wait_for(
            lambda: (
                (d := queue_depths(broker_url=amqp_url, queues=[idle_queue, "no-such-queue"]))
                and d[idle_queue] == 3
                and d
            ),
            timeout=20,
        )
        assert depths["no-such-queue"] == 0
    finally:
        smtp.stop()
