"""End to end through a real Celery worker: signed POST -> stored -> task after commit ->
lead and activity written."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from churnapp.models import Lead, LeadActivity, Tenant, WebhookEvent, WebhookStatus
from config.celery import app as celery_app
from tests.churnapp.conftest import ghl_event


@pytest.fixture
def webhooks_worker(transactional_db):
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge("webhooks")  # leftovers of earlier runs
    with start_worker(
        celery_app, queues=["webhooks"], perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_webhook_is_processed_by_a_worker(webhooks_worker, post_ghl):
    # given
    Tenant.objects.create(name="Acme", slug="acme", ghl_location_id="loc-acme")
    # when GHL posts a new contact and then a message from them
    contact = post_ghl(
        "acme", ghl_event("ContactCreate", id="c-1", firstName="Ann", phone="5125550111")
    )
    message = post_ghl(
        "acme",
        ghl_event(
            "InboundMessage",
            contactId="c-1",
            messageId="m-1",
            messageType="SMS",
            direction="inbound",
        ),
    )
    # then both were answered at once and the worker applied them
    assert contact.status_code == message.status_code == 200

    def finished():
        return not WebhookEvent.objects.filter(status=WebhookStatus.RECEIVED).exists()

    _wait_for(finished, timeout=60)
    events = list(WebhookEvent.objects.values("event_type", "status", "error"))
    assert {e["status"] for e in events} == {WebhookStatus.PROCESSED}, events
    lead = Lead.objects.get(external_id="c-1")
    assert lead.phone == "+15125550111"
    assert LeadActivity.objects.get(lead=lead).source_event_id == "m-1"
