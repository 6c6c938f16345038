"""The detection path's intervention transaction: what it writes, in how few statements,
and the reads it folds together (policy and stage, open-or-latest, send windows)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import Lead, LeadInterventionEvent
from churnapp.services.intervention_history import lead_intervention_record
from interventions.models import Intervention, InterventionStep, LeadCohort, Outcome, StepStatus
from interventions.selectors import lead_sends_in_windows, lead_sends_since
from interventions.services.experiments import cohort_assign
from interventions.services.orchestration import intervention_on_risk
from notifications.models import Message, MessageStatus
from notifications.services import message_request
from tracking.models import TrackingEvent

# Lead lock, stage+policy, open-or-latest, cohort, variant, intervention, its lifecycle
# event, its history row, the send windows (9), then one step: message_request's own
# reads, savepoints, the message and its lifecycle event (9), the step row, and the
# SET LOCAL that spares the commit its WAL flush (interventions.services.dispatch). It
# was 38.
INTERVENTION_STATEMENTS = 20


@pytest.fixture
def reachable(lead):
    Lead.objects.filter(pk=lead.pk).update(phone="+15125550123", consent_sms=True)
    lead.refresh_from_db()
    return lead


def test_a_tier_rise_plans_the_intervention_within_its_statement_budget(
    reachable, sms_only, django_assert_max_num_queries
):
    # given a lead that never had an intervention (no cohort yet)
    lead = reachable
    # when its risk rises to critical
    with django_assert_max_num_queries(INTERVENTION_STATEMENTS):
        intervention = intervention_on_risk(
            tenant_id=lead.tenant_id,
            lead_id=lead.id,
            previous_tier="low",
            new_tier="critical",
            score=0.9,
            reasons=[{"factor": "silence", "text": "no reply in 40 days", "impact": 0.3}],
        )
    # then everything the transition needs was written: intervention, cohort, step,
    # the outbox message, the lifecycle events and churnapp's history row
    assert (intervention.stage, intervention.episode, intervention.status) == (3, 1, "planned")
    assert LeadCohort.objects.get(lead=lead).is_holdout is False
    step = InterventionStep.objects.get(intervention=intervention)
    assert step.status == StepStatus.REQUESTED and step.message.channel == "sms"
    assert step.message.status == MessageStatus.QUEUED
    kinds = set(
        TrackingEvent.objects.filter(lead_id=lead.id).values_list("kind", flat=True).distinct()
    )
    assert {"intervention_started", "message_queued"} <= kinds
    history = LeadInterventionEvent.objects.get(lead=lead)
    assert (history.tenant_id, history.outcome, history.stage) == (lead.tenant_id, "started", 3)


def test_a_rise_during_an_open_window_resolves_it_and_escalates_in_the_same_episode(
    reachable, sms_only, assess
):
    # given an open stage-1 intervention after an earlier, resolved episode
    assess(reachable, "early_warning")
    first = Intervention.objects.get(lead=reachable)
    Intervention.objects.filter(pk=first.pk).update(
        status="resolved", outcome="no_response", resolved_at=timezone.now() - dt.timedelta(days=30)
    )
    assess(reachable, "early_warning")
    second = Intervention.objects.get(lead=reachable, status="planned")
    assert second.episode == first.episode + 1
    # when the risk rises to critical during its window
    assess(reachable, "critical", previous_tier="early_warning")
    # then the open one ends as no response and stage 3 runs in its episode
    second.refresh_from_db()
    assert (second.status, second.outcome) == ("resolved", Outcome.NO_RESPONSE)
    third = Intervention.objects.get(lead=reachable, status="planned")
    assert (third.stage, third.episode, third.previous_id) == (3, second.episode, second.id)


def test_send_windows_in_one_query_count_as_each_window_alone(tenant, reachable, sms_only):
    # given sends to the lead 2 hours, 3 days and 10 days ago, and one that was suppressed
    now = timezone.now()
    for i, (channel, age, status) in enumerate(
        [
            ("sms", dt.timedelta(hours=2), MessageStatus.QUEUED),
            ("email", dt.timedelta(days=3), MessageStatus.QUEUED),
            ("sms", dt.timedelta(days=3), MessageStatus.SUPPRESSED),
            ("sms", dt.timedelta(days=10), MessageStatus.QUEUED),
        ]
    ):
        message = message_request(
            tenant=tenant,
            channel=channel,
            lead=reachable,
            template_key="stage1",
            context={"stage": 1, "risk_reasons": [], "episode": 1},
            idempotency_key=f"windows:{i}",
        )
        Message.objects.filter(pk=message.pk).update(created_at=now - age, status=status)
    windows = (dt.timedelta(days=1), dt.timedelta(days=7), dt.timedelta(days=30))
    # when both are read
    together = lead_sends_in_windows(lead=reachable, now=now, windows=windows)
    alone = [lead_sends_since(lead=reachable, since=now - w) for w in windows]
    # then they agree, window by window
    assert together == alone
    assert [c.total for c in together] == [1, 2, 3]
    assert together[2].by_channel == {"sms": 2, "email": 1}


def test_the_first_cohort_stands_when_the_holdout_share_changes(tenant, policy):
    # given a lead assigned while the holdout share is 0 %
    lead = LeadFactory(tenant=tenant)
    first = cohort_assign(lead=lead, policy=policy)
    assert first.is_holdout is False and first.pk is not None
    # when the share becomes 100 %
    policy.holdout_percent = 100
    # then the lead keeps its first arm, and there is still one row
    again = cohort_assign(lead=lead, policy=policy)
    assert (again.pk, again.is_holdout) == (first.pk, False)
    assert LeadCohort.objects.filter(lead=lead).count() == 1
    # and a new lead under 100 % is held out
    assert cohort_assign(lead=LeadFactory(tenant=tenant), policy=policy).is_holdout is True


def test_history_takes_its_tenant_from_the_lead_and_refuses_an_unknown_lead(tenant, lead):
    event = lead_intervention_record(
        lead_id=lead.pk, stage=2, outcome="started", at=timezone.now(), key="iv:1:started"
    )
    assert LeadInterventionEvent.objects.get(pk=event.pk).tenant_id == tenant.id
    with pytest.raises(Lead.DoesNotExist):
        lead_intervention_record(
            lead_id=10**12, stage=2, outcome="started", at=timezone.now(), key="iv:2:started"
        )
