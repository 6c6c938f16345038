"""JSON logs carry the ids of the task at hand and never a phone number, email or body."""

from __future__ import annotations

import io
import json
import logging

import pytest

from config.logging import (
    ContextFilter,
    JsonFormatter,
    RedactFilter,
    log_context_end,
    log_context_start,
    log_context_update,
)


@pytest.fixture
def json_log():
    """The production handler chain (context, redaction, JSON) on a fresh logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.ops.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_lines_carry_the_context_ids(json_log):
    logger, lines = json_log
    token = log_context_start(task_id="abc", task="notifications.message_send", message_id=7)
    try:
        log_context_update(tenant_id=3, lead_id=11, phone="+15551234567")  # unknown key dropped
        logger.info("sent")
    finally:
        log_context_end(token)
    logger.info("outside")
    first, second = lines()
    assert first["message"] == "sent"
    assert {k: first[k] for k in ("task_id", "task", "message_id", "tenant_id", "lead_id")} == {
        "task_id": "abc",
        "task": "notifications.message_send",
        "message_id": 7,
        "tenant_id": 3,
        "lead_id": 11,
    }
    assert "phone" not in first
    assert "task_id" not in second  # the context ended with the task


def test_update_outside_a_context_does_not_leak(json_log):
    logger, lines = json_log
    log_context_update(lead_id=99)
    logger.info("idle")
    assert "lead_id" not in lines()[0]


def test_phone_numbers_emails_and_bodies_are_redacted(json_log):
    logger, lines = json_log
    logger.info(
        "send to %s and %s, cc (555) 123-4567, on 2026-11-25 12:00 for lead 12345",
        "+1 555 010 9999",
        "jane.doe+x@example.co.uk",
        extra={"body_text": "Hi Jane, still looking?", "to_address": "+15550109999", "lead_id": 4},
    )
    try:
        raise ValueError("bad address jane@example.com")
    except ValueError:
        logger.exception("failed for +447700900123")
    sent, failed = lines()
    text = json.dumps([sent, failed])
    for secret in (
        "555 010 9999",
        "jane.doe",
        "123-4567",
        "Hi Jane",
        "15550109999",
        "jane@",
        "7700900123",
    ):
        assert secret not in text
    assert sent["message"] == (
        "send to [phone] and [email], cc [phone], on 2026-11-25 12:00 for lead 12345"
    )
    assert sent["body_text"] == "[redacted]" and sent["to_address"] == "[redacted]"
    assert sent["lead_id"] == 4
    assert sent["logger"] == "tests.ops.json"
    assert "[email]" in failed["exc"] and "ValueError" in failed["exc"]


@pytest.mark.django_db(transaction=True)
def test_a_task_logs_with_its_ids(celery_worker, tenant, settings):
    """Through a real worker: prerun binds the task's id arguments, the status receiver
    adds tenant and lead; whatever the send path logs meanwhile carries them."""
    from django.conf import settings as django_settings

    from churnapp.factories import LeadFactory
    from config.logging import log_context
    from notifications.models import Message
    from notifications.signals import message_status_changed
    from notifications.tasks import message_send
    from tests.churnapp.conftest import wait_for

    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    lead = LeadFactory(tenant=tenant)
    message = Message.objects.create(
        tenant=tenant, lead=lead, channel="email", idempotency_key="ops-log-1", subject="s"
    )
    contexts = []

    def capture(sender, **kwargs):
        contexts.append(log_context())

    message_status_changed.connect(capture, weak=False)
    try:
        result = message_send.delay(message.id)
        wait_for(lambda: Message.objects.get(pk=message.pk).status == "sent", timeout=30)
    finally:
        message_status_changed.disconnect(capture)
    # the last status change (sent) ran inside the task
    context = contexts[-1]
    assert context["task"] == "notifications.message_send"
    assert context["task_id"] == result.id
    assert context["message_id"] == message.id
    assert context["tenant_id"] == tenant.id and context["lead_id"] == lead.id
