"""The staged journey: start, escalate through silent windows, stop on reply, holdout,
quiet hours, frequency caps, idempotency, escalation SLAs."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from churnapp.services.activities import ActivityInput, activities_ingest
from interventions.models import (
    Escalation,
    Intervention,
    InterventionStatus,
    Outcome,
    StepStatus,
)
from interventions.services.escalations import escalations_check_sla
from interventions.services.orchestration import interventions_evaluate_due
from notifications.models import Message, MessageStatus
from notifications.services import message_status_record
from notifications.services.sending import messages_claim_for_send


def _ingest_now(lead, kind: str, event_id: str) -> None:
    """One activity of the lead, now, as the CRM would send it."""
    activities_ingest(
        tenant=lead.tenant,
        items=[
            ActivityInput(
                lead_external_id=lead.external_id,
                kind=kind,
                occurred_at=timezone.now(),
                source_event_id=event_id,
            )
        ],
    )


def _open(lead) -> Intervention:
    return Intervention.objects.get(lead=lead, status__in=["planned", "active", "engaged"])


def test_rise_to_early_warning_then_silence_walks_through_all_three_stages(
    lead, policy, manager, assess
):
    # given a lead rising to early warning
    assess(lead, "early_warning")
    first = _open(lead)
    assert (first.stage, first.status, first.is_holdout) == (1, "planned", False)
    step = first.steps.get()
    assert step.channel == "email" and step.status == StepStatus.REQUESTED
    assert step.message.status == MessageStatus.QUEUED
    assert step.message.fallback_channels == ["sms"]
    assert "no reply in 12 days" not in step.message.body_text  # stage 1 is a soft touch

    # when its window closes in silence
    later = first.window_ends_at + dt.timedelta(minutes=1)
    assert interventions_evaluate_due(now=later) == 1
    # then stage 2 runs in the same episode
    first.refresh_from_db()
    assert (first.status, first.outcome) == ("resolved", Outcome.NO_RESPONSE)
    second = _open(lead)
    assert (second.stage, second.episode, second.previous_id) == (2, first.episode, first.id)
    assert [s.channel for s in second.steps.order_by("position")] == ["sms", "email", "ghl_task"]

    # when stage 2 is silent too, then stage 3 opens an escalation to the manager
    interventions_evaluate_due(now=second.window_ends_at + dt.timedelta(minutes=1))
    third = _open(lead)
    assert third.stage == 3
    escalation = Escalation.objects.get(intervention=third)
    assert escalation.manager == manager and escalation.status == "open"
    alert = Message.objects.get(idempotency_key=f"esc:{escalation.id}:opened")
    assert alert.channel == "agent_alert" and alert.agent == manager
    assert escalation.sla_due_at > escalation.opened_at


def test_reply_at_stage_one_ends_it_as_re_engaged_and_stops_sends(lead, policy, assess):
    # given stage 1 with its email still queued
    assess(lead, "early_warning")
    intervention = _open(lead)
    message = intervention.steps.get().message
    # when the lead replies by SMS (ingested as the CRM would)
    _ingest_now(lead, "sms_inbound", "reply-1")
    # then
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome) == ("resolved", Outcome.RE_ENGAGED)
    message.refresh_from_db()
    assert message.status == MessageStatus.CANCELLED
    assert intervention.steps.get().status == StepStatus.CANCELLED
    # and a later silent window does not restart anything
    assert interventions_evaluate_due(now=timezone.now() + dt.timedelta(days=4)) == 0


def test_a_reply_while_a_worker_sends_the_email_resolves_and_lets_the_send_go_on(
    lead, policy, assess
):
    # given stage 1 whose email a send worker has just claimed (queued -> sending)
    assess(lead, "early_warning")
    intervention = _open(lead)
    message = intervention.steps.get().message
    claimed = messages_claim_for_send(
        tenant_id=lead.tenant_id,
        channel="email",
        token=uuid.uuid4(),
        worker="test-worker",
        limit=10,
        message_ids=[message.pk],
    )
    assert claimed == [message.pk]
    # when the lead replies (the ingest must not fail on the message in flight)
    _ingest_now(lead, "sms_inbound", "reply-during-send")
    # then the intervention ends, and the claimed email and its step are left to the send
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome) == ("resolved", Outcome.RE_ENGAGED)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    assert intervention.steps.get().status == StepStatus.REQUESTED


def test_a_batch_of_kinds_that_move_no_intervention_does_not_read_them(lead, policy, assess):
    """An email open engages through message_engaged, not as activity: a batch of only
    such kinds leaves the open intervention alone without a query of it."""
    assess(lead, "early_warning")
    intervention = _open(lead)
    with CaptureQueriesContext(connection) as captured:
        _ingest_now(lead, "email_open", "open-1")
    assert not [q for q in captured.captured_queries if "interventions_intervention" in q["sql"]]
    intervention.refresh_from_db()
    assert intervention.status == "planned"
    # while a website visit in the next batch engages it
    _ingest_now(lead, "website_visit", "visit-1")
    intervention.refresh_from_db()
    assert intervention.status == InterventionStatus.ENGAGED


def test_a_batch_with_only_an_opportunity_lost_ends_the_intervention(lead, policy, assess):
    """An outcome without a direction still ends it: the batch needs no inbound activity
    (it once did, so the result depended on what else the CRM sent in the batch)."""
    # given stage 1 open
    assess(lead, "early_warning")
    intervention = _open(lead)
    # when the CRM reports only the lost opportunity
    _ingest_now(lead, "opportunity_lost", "lost-1")
    # then
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome) == ("resolved", Outcome.CHURNED)


def test_control_lead_receives_nothing_but_is_resolved(lead, policy, assess):
    # given a tenant whose every lead is held out
    policy.holdout_percent = 100
    policy.save()
    # when the lead rises to early warning and stays silent
    assess(lead, "early_warning")
    intervention = _open(lead)
    assert intervention.is_holdout and intervention.status == InterventionStatus.ACTIVE
    interventions_evaluate_due(now=intervention.window_ends_at + dt.timedelta(minutes=1))
    # then it is resolved like a treated one, and nothing was ever sent
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome) == ("resolved", Outcome.NO_RESPONSE)
    assert _open(lead).stage == 2
    assert not Message.objects.filter(lead=lead).exists()
    assert not intervention.steps.exists()


def test_quiet_hours_in_the_lead_zone_move_the_send(lead, policy, assess):
    # given quiet hours around the lead's current local time (Tokyo)
    lead.timezone = "Asia/Tokyo"
    lead.save()
    local_now = timezone.now().astimezone(dt.timezone(dt.timedelta(hours=9)))
    policy.quiet_hours_start = (
        (local_now - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0)
    )
    end = (local_now + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    policy.quiet_hours_end = end.time()
    policy.save()
    # when
    assess(lead, "early_warning")
    # then the send waits for the end of quiet hours, not dropped
    message = _open(lead).steps.get().message
    assert message.status == MessageStatus.QUEUED
    assert message.not_before is not None
    assert abs((message.not_before - end).total_seconds()) < 60


def test_a_frequency_cap_records_a_skip_with_its_reason(lead, policy, assess):
    policy.cap_per_day = 0
    policy.save()
    assess(lead, "early_warning")
    step = _open(lead).steps.get()
    assert step.status == StepStatus.SKIPPED
    assert step.skip_reason == "frequency cap: 0 messages per day reached"
    assert step.message is None
    assert _open(lead).status == InterventionStatus.ACTIVE  # nothing to send, window runs


def test_a_duplicate_risk_assessed_does_nothing(lead, policy, assess):
    assess(lead, "early_warning")
    assess(lead, "early_warning")
    assess(lead, "active_risk", previous_tier="early_warning")
    assess(lead, "active_risk", previous_tier="early_warning")
    assert Intervention.objects.filter(lead=lead).count() == 2
    assert Intervention.objects.filter(lead=lead, status="resolved").count() == 1
    assert _open(lead).stage == 2
    assert Message.objects.filter(lead=lead, agent__isnull=True).count() == 3  # 1 + sms + email


def test_a_fall_in_tier_does_nothing(lead, policy, assess):
    assess(lead, "low", previous_tier="early_warning")
    assert not Intervention.objects.filter(lead=lead).exists()


def test_an_sla_breach_alerts_the_manager_again_once(lead, policy, manager, assess):
    # given a lead jumping straight to critical
    assess(lead, "critical")
    escalation = Escalation.objects.get(lead=lead)
    # when the SLA passes unacknowledged
    after = escalation.sla_due_at + dt.timedelta(minutes=1)
    assert escalations_check_sla(now=after) == 1
    assert escalations_check_sla(now=after + dt.timedelta(hours=1)) == 0
    # then
    escalation.refresh_from_db()
    assert escalation.breached_at == after
    alerts = Message.objects.filter(agent=manager, channel="agent_alert")
    assert sorted(m.idempotency_key for m in alerts) == [
        f"esc:{escalation.id}:breached",
        f"esc:{escalation.id}:opened",
    ]


def test_cooldown_blocks_a_new_episode_right_after_one_ends(lead, policy, assess):
    assess(lead, "early_warning")
    intervention = _open(lead)
    activities_ingest(
        tenant=lead.tenant,
        items=[
            ActivityInput(lead.external_id, "email_reply", timezone.now(), "r-1"),
        ],
    )
    intervention.refresh_from_db()
    assert intervention.outcome == Outcome.RE_ENGAGED
    # the lead slips again at once: within the 72 h cooldown nothing restarts
    assess(lead, "early_warning")
    assert Intervention.objects.filter(lead=lead).count() == 1


def test_a_step_that_cannot_be_sent_is_skipped_with_why_and_the_rest_goes_on(lead, policy, assess):
    # given the tenant deleted its stage-2 SMS template
    from notifications.models import Template

    Template.objects.filter(tenant=lead.tenant, key="stage2", channel="sms").delete()
    # when the lead jumps to active risk
    assess(lead, "active_risk")
    # then the SMS step says why it was skipped, and email and the agent task still go out
    steps = {s.channel: s for s in _open(lead).steps.all()}
    assert steps["sms"].status == StepStatus.SKIPPED
    assert "no active sms template 'stage2'" in steps["sms"].skip_reason
    assert steps["email"].status == steps["ghl_task"].status == StepStatus.REQUESTED
    assert "no reply in 12 days" in steps["ghl_task"].message.body_text


def test_scoring_features_see_the_intervention_history(lead, policy, assess):
    from churnapp.models import LeadInterventionEvent

    assess(lead, "early_warning")
    activities_ingest(
        tenant=lead.tenant,
        items=[ActivityInput(lead.external_id, "sms_inbound", timezone.now(), "r-9")],
    )
    rows = LeadInterventionEvent.objects.filter(lead=lead).order_by("occurred_at", "id")
    assert [(r.stage, r.outcome) for r in rows] == [(1, "started"), (1, "re_engaged")]


def test_escalation_goes_to_the_agents_own_manager(tenant, lead, policy, manager, assess):
    from churnapp.factories import AgentFactory
    from churnapp.models import AgentRole

    own = AgentFactory(tenant=tenant, role=AgentRole.MANAGER, name="Own Manager")
    lead.assigned_agent.manager = own
    lead.assigned_agent.save()
    assess(lead, "critical")
    assert Escalation.objects.get(lead=lead).manager == own


def test_a_stop_reply_is_an_opt_out_not_a_re_engagement(lead, policy, assess):
    from notifications.services.callbacks import sms_inbound_record

    assess(lead, "early_warning")
    intervention = _open(lead)
    sms_inbound_record(
        tenant=lead.tenant,
        from_phone=lead.phone,
        body="STOP",
        provider="twilio",
        event_id="SM-stop-1",
        lead=lead,
    )
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome) == ("resolved", Outcome.UNSUBSCRIBED)


def _intervention_log(intervention) -> list[tuple[str, str, str]]:
    from tracking.models import TrackingEvent

    return [
        (e.kind, e.data.get("previous_status"), e.data.get("new_status"))
        for e in TrackingEvent.objects.filter(intervention_id=intervention.id).order_by("id")
        if e.kind.startswith("intervention_") and e.kind != "intervention_started"
    ]


def test_an_open_of_a_planned_interventions_email_activates_then_engages_it(lead, policy, assess):
    from notifications.services.callbacks import message_engagement_record

    # given stage 1 planned, its email not reported sent yet (an open can outrun it)
    assess(lead, "early_warning")
    intervention = _open(lead)
    message = intervention.steps.get().message
    message_status_record(message_id=message.id, new_status="sending")
    # when the lead opens it, then clicks it
    message_engagement_record(message=message, kind="opened", provider="test", event_id="o1")
    message_engagement_record(message=message, kind="clicked", provider="test", event_id="c1")
    # then it was activated, then engaged, each logged once with the statuses it moved
    intervention.refresh_from_db()
    assert intervention.status == InterventionStatus.ENGAGED
    assert intervention.activated_at == intervention.engaged_at is not None
    assert _intervention_log(intervention) == [
        ("intervention_activated", "planned", "active"),
        ("intervention_engaged", "active", "engaged"),
    ]


def test_an_open_engages_an_active_intervention_and_keeps_its_activation_time(lead, policy, assess):
    from notifications.services.callbacks import message_engagement_record

    assess(lead, "early_warning")
    intervention = _open(lead)
    message = intervention.steps.get().message
    for status in ("sending", "sent"):
        message_status_record(message_id=message.id, new_status=status)
    intervention.refresh_from_db()
    activated_at = intervention.activated_at
    assert intervention.status == InterventionStatus.ACTIVE and activated_at is not None
    # when
    message_engagement_record(message=message, kind="opened", provider="test", event_id="o1")
    # then
    intervention.refresh_from_db()
    assert intervention.status == InterventionStatus.ENGAGED
    assert intervention.activated_at == activated_at < intervention.engaged_at
    assert _intervention_log(intervention) == [
        ("intervention_activated", "planned", "active"),
        ("intervention_engaged", "active", "engaged"),
    ]


def test_an_open_after_the_intervention_ended_changes_nothing(lead, policy, assess):
    from notifications.services.callbacks import message_engagement_record

    assess(lead, "early_warning")
    intervention = _open(lead)
    message = intervention.steps.get().message
    for status in ("sending", "sent"):
        message_status_record(message_id=message.id, new_status=status)
    interventions_evaluate_due(now=intervention.window_ends_at + dt.timedelta(minutes=1))
    intervention.refresh_from_db()
    ended = (intervention.status, intervention.outcome, intervention.engaged_at)
    before = _intervention_log(intervention)
    # when the old email is opened at last
    message_engagement_record(message=message, kind="opened", provider="test", event_id="o1")
    # then
    intervention.refresh_from_db()
    assert (intervention.status, intervention.outcome, intervention.engaged_at) == ended
    assert ended[0] == "resolved" and ended[2] is None
    assert _intervention_log(intervention) == before
