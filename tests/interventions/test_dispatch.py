"""How an intervention transaction's planned messages leave after commit: a few, in a
worker, are sent right there in the same task (no send task published); many, or any
outside a worker, go as one batch task per tenant and channel; a send that cannot go
now is handed to its send task."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import Lead
from config.celery import app
from interventions.models import Intervention
from interventions.services.dispatch import planned_sends_dispatch_on_commit
from notifications.backends import locmem
from notifications.models import DeliveryAttempt, Message, MessageStatus
from notifications.services import message_request
from notifications.services.sending import messages_dispatch
from tests.waiting import wait_for

SEND_TASKS = {"notifications.message_send", "notifications.message_send_batch"}


@pytest.fixture
def published():
    """(task name, args, countdown or eta) of every task published by this process (the
    in-process test worker's included); the queues are purged after."""
    seen: list[tuple[str, list, object]] = []

    def record(sender=None, body=None, headers=None, **kwargs):
        seen.append((sender, list(body[0]), (headers or {}).get("eta")))

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)
    with app.connection_for_write() as conn:
        for queue in settings.CELERY_QUEUE_NAMES:
            conn.default_channel.queue_purge(queue)


def _reachable(lead: Lead) -> Lead:
    Lead.objects.filter(pk=lead.pk).update(
        phone=f"+1512555{lead.pk % 10_000:04d}", consent_sms=True
    )
    lead.refresh_from_db()
    return lead


@app.task(name="tests.interventions.assess_critical", queue="interventions", ignore_result=True)
def assess_critical(lead_id: int) -> None:
    """What a real-time rescore does in its task: the tier rise, in one transaction."""
    from churnapp.signals import risk_assessed

    with transaction.atomic():
        lead = Lead.objects.get(pk=lead_id)
        Lead.objects.filter(pk=lead_id).update(risk_tier="critical", risk_score=0.9)
        risk_assessed.send(
            sender=None,
            tenant_id=lead.tenant_id,
            lead_id=lead_id,
            assessment_id=None,
            previous_tier="low",
            new_tier="critical",
            score=0.9,
            model_version="test",
            reasons=[],
        )


@pytest.mark.django_db(transaction=True)
def test_in_a_worker_the_first_message_is_sent_by_the_task_that_planned_it(
    celery_worker, lead, sms_only, published
):
    # given a reachable lead whose rescore runs in a worker
    lead = _reachable(lead)
    locmem.outbox.clear()
    # when its risk rises there
    assess_critical.delay(lead.pk)
    # then its SMS went out once, sent by that task after its commit: no send task
    message = wait_for(
        lambda: Message.objects.filter(lead=lead, status=MessageStatus.SENT).first(), timeout=30
    )
    assert [m["message_id"] for m in locmem.outbox] == [message.pk]
    assert DeliveryAttempt.objects.filter(message=message).count() == 1
    assert [name for name, _, _ in published if name in SEND_TASKS] == []
    # and the intervention turned active on the send, as it does after a send task
    intervention = wait_for(
        lambda: Intervention.objects.filter(lead=lead, status="active").first(), timeout=10
    )
    assert intervention.activated_at is not None


@pytest.mark.django_db(transaction=True)
def test_many_planned_in_one_transaction_leave_as_one_batch_task(
    tenant, sms_only, assess, published, settings
):
    # given more leads than a worker would send in place
    settings.INTERVENTIONS_SEND_HERE_MAX = 1
    leads = [_reachable(LeadFactory(tenant=tenant, timezone="UTC")) for _ in range(4)]
    # when one transaction (a batch rescore's chunk) raises all their tiers
    with transaction.atomic():
        for lead in leads:
            assess(lead, "critical")
        assert [name for name, _, _ in published if name in SEND_TASKS] == []
    # then after commit one batch task carries all four messages, and no single sends
    ids = sorted(Message.objects.filter(lead__in=leads).values_list("pk", flat=True))
    assert len(ids) == 4
    sends = [(name, args) for name, args, _ in published if name in SEND_TASKS]
    assert sends == [("notifications.message_send_batch", [tenant.pk, "sms", ids])]


@pytest.mark.django_db(transaction=True)
def test_outside_a_worker_even_one_planned_message_is_published(lead, sms_only, assess, published):
    # given a lead whose tier rises in a request or a shell, not in a worker
    lead = _reachable(lead)
    locmem.outbox.clear()
    # when it is assessed
    assess(lead, "critical")
    # then nothing was sent in this process; its batch task carries it
    message = Message.objects.get(lead=lead)
    assert locmem.outbox == [] and message.status == MessageStatus.QUEUED
    sends = [(name, args) for name, args, _ in published if name in SEND_TASKS]
    assert sends == [("notifications.message_send_batch", [lead.tenant_id, "sms", [message.pk]])]


@pytest.mark.django_db(transaction=True)
def test_a_savepoint_rolled_back_takes_its_planned_sends_with_it(tenant, lead, published):
    # given two queued messages, one dispatched from a savepoint that rolls back
    first, second = (
        Message.objects.create(
            tenant=tenant,
            lead=lead,
            channel="sms",
            template_key="k",
            body_text="hi",
            to_address="+15125550123",
            idempotency_key=f"sp-{n}",
        )
        for n in (1, 2)
    )
    with transaction.atomic():
        try:
            with transaction.atomic():
                planned_sends_dispatch_on_commit(message_ids=[first.pk])
                raise RuntimeError("the step failed")
        except RuntimeError:
            pass
        planned_sends_dispatch_on_commit(message_ids=[second.pk])
    # then only the message planned outside it was published
    sends = [(name, args) for name, args, _ in published if name in SEND_TASKS]
    assert sends == [("notifications.message_send_batch", [tenant.pk, "sms", [second.pk]])]


@pytest.mark.django_db(transaction=True)
def test_a_message_not_due_yet_is_handed_to_its_delayed_send_task(
    tenant, lead, published, settings
):
    # given a message planned for a minute from now (quiet hours ending), within the
    # delay a task may wait
    from notifications.models import Template

    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 900

    Template.objects.create(
        tenant=tenant,
        channel="sms",
        key="checkin",
        variant="A",
        body_text="Hi {{ lead.first_name }}",
    )
    lead = _reachable(lead)
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="later-1",
        not_before=timezone.now() + dt.timedelta(seconds=60),
        enqueue=False,
    )
    locmem.outbox.clear()
    # when a worker's transaction that planned it would send it in place
    settled = messages_dispatch(message_ids=[message.pk], send_here=1)
    # then nothing went out and nothing was counted; its send task waits for the time
    message.refresh_from_db()
    assert settled == 0 and locmem.outbox == []
    assert (message.status, message.attempts) == (MessageStatus.QUEUED, 0)
    [(name, args, eta)] = [p for p in published if p[0] in SEND_TASKS]
    assert (name, args) == ("notifications.message_send", [message.pk])
    assert dt.datetime.fromisoformat(eta) >= timezone.now() + dt.timedelta(seconds=50)


@pytest.mark.django_db(transaction=True)
def test_the_window_evaluator_publishes_its_escalations_sends_even_in_a_worker(
    celery_worker, lead, policy, assess, published
):
    # given a stage-1 intervention whose window has closed in silence, its email sent
    from interventions.tasks import evaluate_windows

    lead = _reachable(lead)
    assess(lead, "early_warning")
    first = Intervention.objects.get(lead=lead)
    wait_for(lambda: Message.objects.filter(lead=lead, status=MessageStatus.SENT).exists())
    Intervention.objects.filter(pk=first.pk).update(
        window_ends_at=timezone.now() - dt.timedelta(minutes=1)
    )
    published.clear()
    # when beat's evaluator runs on the worker and escalates it to stage 2
    evaluate_windows.delay()
    second = wait_for(lambda: Intervention.objects.filter(lead=lead, stage=2).first(), timeout=30)
    planned = set(
        Message.objects.filter(metadata__intervention_id=second.pk).values_list("pk", flat=True)
    )
    assert len(planned) >= 2
    # then its messages were published as batch tasks (not sent one by one in the
    # evaluator's task, which real-time rescores queue behind), and they went out once
    wait_for(
        lambda: (
            Message.objects.filter(pk__in=planned, status=MessageStatus.SENT).count()
            == len(planned)
        ),
        timeout=30,
    )
    batched = {
        message_id
        for name, args, _ in published
        if name == "notifications.message_send_batch"
        for message_id in args[2]
    }
    assert batched == planned
    assert DeliveryAttempt.objects.filter(message_id__in=planned).count() == len(planned)
