"""Receivers append lifecycle events in the sender's transaction; broadcasts go out only
after commit, through the real Redis channel layer."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import AgentRole
from churnapp.signals import risk_assessed
from interventions.models import Escalation, Intervention
from interventions.services.escalations import escalation_acknowledge
from interventions.services.orchestration import interventions_evaluate_due
from interventions.services.policy import policy_ensure
from notifications.models import Message
from notifications.realtime import tenant_group
from notifications.services.callbacks import message_engagement_record
from notifications.services.messages import message_status_record
from tracking.events import event_payload, tracking_event_record, tracking_events_record
from tracking.models import TrackingEvent


@pytest.fixture(autouse=True)
def locmem_backends(settings):
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }


@pytest.fixture
def lead(tenant):
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()
    AgentFactory(tenant=tenant, role=AgentRole.MANAGER)
    return LeadFactory(tenant=tenant, assigned_agent=AgentFactory(tenant=tenant), timezone="UTC")


def assess(lead, new_tier, previous_tier="low"):
    type(lead).objects.filter(pk=lead.pk).update(risk_tier=new_tier, risk_score=0.7)
    risk_assessed.send(
        sender=None,
        tenant_id=lead.tenant_id,
        lead_id=lead.id,
        assessment_id=None,
        previous_tier=previous_tier,
        new_tier=new_tier,
        score=0.7,
        model_version="test",
        reasons=[{"factor": "silence", "text": "no reply in 12 days", "impact": 0.2}],
    )


def kinds(**filters) -> list[str]:
    return list(
        TrackingEvent.objects.filter(**filters).order_by("id").values_list("kind", flat=True)
    )


def test_a_journey_is_logged_in_order(lead):
    # given a rise in risk: the orchestration starts stage 1 and queues an email
    assess(lead, "early_warning")
    iv = Intervention.objects.get(lead=lead)
    message = Message.objects.get(metadata__intervention_id=iv.id)
    # when the message goes out, is opened, and the window closes in silence
    message_status_record(message_id=message.id, new_status="sending")
    message_status_record(message_id=message.id, new_status="sent")
    message_status_record(message_id=message.id, new_status="delivered")
    message_engagement_record(message=message, kind="opened", provider="test", event_id="o1")
    interventions_evaluate_due(now=iv.window_ends_at + dt.timedelta(minutes=1))
    # then the log holds every transition of the intervention, in id order
    log = kinds(intervention_id=iv.id)
    assert log[0] == "intervention_started"
    expected_tail = [
        "message_queued",
        "message_sent",
        "message_delivered",
        "message_opened",  # once: the status move to opened is not logged twice
    ]
    assert [k for k in log if k in expected_tail] == expected_tail
    assert log[-1] == "outcome_recorded"
    outcome = TrackingEvent.objects.filter(intervention_id=iv.id, kind="outcome_recorded").get()
    assert outcome.data["outcome"] == "no_response" and outcome.stage == 1
    assert outcome.tenant_id == lead.tenant_id and outcome.lead_id == lead.id
    # the tier change is on the lead's timeline; stage 2 continues it
    lead_log = kinds(lead_id=lead.id)
    assert "tier_changed" in lead_log
    assert lead_log.count("intervention_started") == 2
    ids = list(TrackingEvent.objects.filter(lead_id=lead.id).values_list("id", flat=True))
    assert ids == sorted(ids)


def test_escalations_are_logged(lead, tenant):
    assess(lead, "critical")
    escalation = Escalation.objects.get(lead=lead)
    escalation_acknowledge(escalation=escalation, by=None, note="calling now")
    log = kinds(escalation_id=escalation.id)
    assert log == ["escalated", "escalation_acknowledged"]


def test_an_exception_after_the_signal_rolls_back_the_change_and_its_events(lead):
    # given
    before = TrackingEvent.objects.count()
    # when the sender's transaction fails after the signal was handled
    with pytest.raises(RuntimeError), transaction.atomic():
        assess(lead, "early_warning")
        assert TrackingEvent.objects.count() > before  # written in the same transaction
        raise RuntimeError("boom")
    # then neither the intervention nor any event exists
    assert not Intervention.objects.filter(lead=lead).exists()
    assert TrackingEvent.objects.count() == before


def test_an_unchanged_tier_is_not_logged(lead):
    risk_assessed.send(
        sender=None,
        tenant_id=lead.tenant_id,
        lead_id=lead.id,
        assessment_id=1,
        previous_tier="low",
        new_tier="low",
        score=0.1,
        model_version="t",
        reasons=[],
    )
    assert kinds(lead_id=lead.id) == []


def test_the_broadcast_reaches_the_tenant_group_only_after_commit(
    transactional_db, tenant, loop_thread
):
    # given a member of the tenant's group on the real Redis channel layer
    layer = get_channel_layer()
    member = loop_thread.run(layer.new_channel())
    loop_thread.run(layer.group_add(tenant_group(tenant.id), member))
    try:
        # when an event is recorded in a transaction
        with transaction.atomic():
            event = tracking_event_record(
                tenant_id=tenant.id, kind="intervention_started", stage=1, data={"x": 1}
            )
            # then nothing is broadcast before the commit
            assert loop_thread.receive(layer, member, 0.5) is None
        # and it arrives after
        got = loop_thread.receive(layer, member, 5)
        # as the socket's text, serialized once by the publisher (broadcast_message)
        assert got["type"] == "tracking.event" and got["event_id"] == event.id
        assert json.loads(got["text"]) == event_payload(TrackingEvent.objects.get(pk=event.id))

        # a rolled-back event is never broadcast
        with pytest.raises(RuntimeError), transaction.atomic():
            tracking_event_record(tenant_id=tenant.id, kind="outcome_recorded")
            raise RuntimeError("rolled back")
        assert loop_thread.receive(layer, member, 0.5) is None
        assert not TrackingEvent.objects.filter(kind="outcome_recorded").exists()
    finally:
        loop_thread.run(layer.group_discard(tenant_group(tenant.id), member))


def test_events_committed_together_go_to_the_group_as_one_message_in_order(
    transactional_db, tenant, loop_thread
):
    # given a member of the tenant's group
    layer = get_channel_layer()
    member = loop_thread.run(layer.new_channel())
    loop_thread.run(layer.group_add(tenant_group(tenant.id), member))
    try:
        # when three events are written by one statement and committed
        with transaction.atomic():
            written = tracking_events_record(
                events=[
                    {"tenant_id": tenant.id, "kind": "message_sent", "data": {"n": n}}
                    for n in range(3)
                ]
            )
        # then one group message carries their texts in order, with the last id
        got = loop_thread.receive(layer, member, 5)
        assert got["type"] == "tracking.event" and got["event_id"] == written[-1].id
        assert [json.loads(text)["id"] for text in got["texts"]] == [e.id for e in written]
        assert loop_thread.receive(layer, member, 0.5) is None
    finally:
        loop_thread.run(layer.group_discard(tenant_group(tenant.id), member))


def test_another_tenants_group_gets_nothing(transactional_db, tenant, other_tenant, loop_thread):
    layer = get_channel_layer()
    member = loop_thread.run(layer.new_channel())
    loop_thread.run(layer.group_add(tenant_group(other_tenant.id), member))
    try:
        with transaction.atomic():
            tracking_event_record(tenant_id=tenant.id, kind="intervention_started")
        # the other tenant's own event, recorded after it, is the first the member gets
        # (one publisher thread sends in order), so the first one was not merely late
        with transaction.atomic():
            own = tracking_event_record(tenant_id=other_tenant.id, kind="outcome_recorded")
        got = loop_thread.receive(layer, member, 5)
        assert got is not None and got["event_id"] == own.id
        assert loop_thread.receive(layer, member, 0.5) is None
    finally:
        loop_thread.run(layer.group_discard(tenant_group(other_tenant.id), member))


def test_occurred_at_defaults_to_now(tenant):
    event = tracking_event_record(tenant_id=tenant.id, kind="opted_out", channel="sms")
    assert abs((event.occurred_at - timezone.now()).total_seconds()) < 60
