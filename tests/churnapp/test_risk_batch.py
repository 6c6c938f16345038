"""Batch and real-time rescoring through a real Celery worker and PostgreSQL, on the
rules scorer (a tenant without a model yet): runs once per slot, chunks once, tier
changes recorded and signalled, daily snapshots bounded, inbound activity rescored."""

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.ml.synthetic import SyntheticEvent, SyntheticLead
from churnapp.models import (
    AssessmentKind,
    Lead,
    RiskAssessment,
    RiskSnapshot,
    RiskTier,
    ScoringChunk,
    ScoringChunkStatus,
    ScoringRun,
    Tenant,
)
from churnapp.services.activities import ActivityInput, activities_ingest
from churnapp.services.event_import import synthetic_history_load
from churnapp.services.scoring import (
    leads_rescore,
    scoring_chunk_process,
    scoring_run_start,
    slot_for,
)
from churnapp.signals import risk_assessed_many
from churnapp.tasks import rescore_tenant
from tests.churnapp.conftest import wait_for


@pytest.fixture
def assessed():
    """Every tier change scoring announced, one dict each (scoring sends them per write
    with risk_assessed_many)."""
    calls = []

    def receiver(*, tenant_id, changes, **kwargs):
        calls.extend({"tenant_id": tenant_id, **change} for change in changes)

    risk_assessed_many.connect(receiver, weak=False)
    yield calls
    risk_assessed_many.disconnect(receiver)


def _history(tenant, n_leads: int, now: dt.datetime) -> list[Lead]:
    """Leads from very engaged to long silent: lead i last replied i*3 days ago. Loaded
    with the bulk importer, which (like any history import) enqueues no rescoring."""
    leads, events = [], []
    for i in range(n_leads):
        ext = f"{tenant.slug}-{i:03d}"
        leads.append(SyntheticLead(ext, "zillow", "new", now - dt.timedelta(days=80)))
        last = now - dt.timedelta(days=3 * i, hours=1)
        for d in range(0, 40, 2):
            events.append(SyntheticEvent(ext, last - dt.timedelta(days=d), "sms_inbound"))
        for d in range(0, 3 * i, 3):  # unanswered chasing since the last reply
            events.append(SyntheticEvent(ext, now - dt.timedelta(days=d, hours=2), "sms_outbound"))
    synthetic_history_load(tenant=tenant, leads=leads, events=events)
    return list(Lead.objects.filter(tenant=tenant).order_by("external_id"))


@pytest.mark.django_db(transaction=True)
def test_batch_run_scores_every_lead_once_per_slot(scoring_worker, assessed):
    # given: 12 leads, chunks of 5
    tenant = Tenant.objects.create(name="Batch", slug="batch")
    now = timezone.now()
    leads = _history(tenant, 12, now)
    slot = slot_for(now)
    run, created = scoring_run_start(tenant_id=tenant.id, slot=slot, chunk_size=5)
    assert created and run.chunks_total == 3
    # when: the tenant task runs (it fans the chunks out to the worker)
    rescore_tenant.delay(tenant.id, slot.isoformat())
    run = wait_for(lambda: ScoringRun.objects.filter(pk=run.pk, finished_at__isnull=False).first())
    # then: every lead scored with rules-v1, varied, with reasons
    assert run.leads_scored == 12 and run.chunks_done == 3 and run.model_version == "rules-v1"
    scored = Lead.objects.filter(tenant=tenant).order_by("external_id")
    scores = [lead.risk_score for lead in scored]
    assert all(s is not None for s in scores)
    assert scores[-1] > scores[0] + 0.3  # the long-silent lead is far riskier
    assert len(set(scores)) == 12
    assert {lead.risk_model_version for lead in scored} == {"rules-v1"}
    assert any("no reply in" in r["text"] for r in scored.last().risk_reasons)
    # one tier-change assessment per lead (unscored -> its tier), one signal each
    changes = RiskAssessment.objects.filter(tenant=tenant, kind=AssessmentKind.TIER_CHANGE)
    assert changes.count() == 12 and len(assessed) == 12
    assert {c["previous_tier"] for c in assessed} == {RiskTier.UNSCORED}
    assert sorted(c["lead_id"] for c in assessed) == sorted(lead.pk for lead in leads)
    assert all(c["model_version"] == "rules-v1" and c["assessment_id"] for c in assessed)
    assert RiskSnapshot.objects.filter(tenant=tenant).count() == 12

    # when: the same slot is started again (beat fired twice, or overlapping workers)
    again, created_again = scoring_run_start(tenant_id=tenant.id, slot=slot, chunk_size=5)
    assert not created_again and again.pk == run.pk
    for chunk in ScoringChunk.objects.filter(run=run):
        assert scoring_chunk_process(chunk_id=chunk.pk) is None  # claimed and done
    # then: no double work
    assert RiskAssessment.objects.filter(tenant=tenant).count() == 12
    assert RiskSnapshot.objects.filter(tenant=tenant).count() == 12
    assert ScoringRun.objects.get(pk=run.pk).leads_scored == 12
    assert len(assessed) == 12


@pytest.mark.django_db(transaction=True)
def test_next_slot_writes_only_tier_changes_and_one_daily_snapshot(assessed):
    tenant = Tenant.objects.create(name="Slots", slug="slots")
    now = timezone.now()
    leads = _history(tenant, 12, now)
    slot = slot_for(now)
    for offset in (0, 1):
        run, _ = scoring_run_start(tenant_id=tenant.id, slot=slot + dt.timedelta(hours=offset))
        for chunk in run.chunks.all():
            scoring_chunk_process(chunk_id=chunk.pk)
    # nothing changed between slots: no new tier-change rows, still one daily per lead
    assert (
        RiskAssessment.objects.filter(tenant=tenant, kind=AssessmentKind.TIER_CHANGE).count() == 12
    )
    assert RiskSnapshot.objects.filter(tenant=tenant).count() == 12
    # a tier that moved since the last score: exactly one new row and one signal
    target = leads[-1]  # the most silent lead, never "low"
    Lead.objects.filter(pk=target.pk).update(risk_tier=RiskTier.LOW)
    leads_rescore(tenant_id=tenant.id, lead_ids=[target.pk])
    target.refresh_from_db()
    assert target.risk_tier != RiskTier.LOW
    assert (assessed[-1]["lead_id"], assessed[-1]["previous_tier"]) == (target.pk, RiskTier.LOW)
    assert assessed[-1]["new_tier"] == target.risk_tier
    assert RiskAssessment.objects.filter(lead=target, kind=AssessmentKind.TIER_CHANGE).count() == 2
    assert RiskSnapshot.objects.filter(lead=target).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_chunk_is_recorded_and_can_be_claimed_again():
    tenant = Tenant.objects.create(name="Fail", slug="fail")
    _history(tenant, 2, timezone.now())
    run, _ = scoring_run_start(tenant_id=tenant.id, slot=slot_for(timezone.now()))
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(
        status=ScoringChunkStatus.RUNNING, claimed_at=timezone.now()
    )
    assert scoring_chunk_process(chunk_id=chunk.pk) is None  # someone holds a fresh claim
    ScoringChunk.objects.filter(pk=chunk.pk).update(
        claimed_at=timezone.now() - dt.timedelta(hours=1)
    )
    applied = scoring_chunk_process(chunk_id=chunk.pk)  # the stale claim is taken over
    assert applied is not None and applied.scored == 2


@pytest.mark.django_db(transaction=True)
def test_inbound_activity_rescores_the_lead_after_commit(scoring_worker, assessed):
    # given: a lead scored critical after weeks of silence
    tenant = Tenant.objects.create(name="Live", slug="live")
    now = timezone.now()
    lead = _history(tenant, 12, now)[-1]
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk])
    lead.refresh_from_db()
    before_score, before_tier, before_at = lead.risk_score, lead.risk_tier, lead.risk_scored_at
    assert RiskTier.rank(before_tier) >= RiskTier.rank(RiskTier.ACTIVE_RISK)
    # when: the lead replies, through the real ingest path, in a transaction
    with transaction.atomic():
        activities_ingest(
            tenant=tenant,
            items=[ActivityInput(lead.external_id, "sms_inbound", timezone.now(), "live-reply")],
        )
        # nothing is enqueued before commit
        assert Lead.objects.get(pk=lead.pk).risk_scored_at == before_at
    # then: the worker rescores it: lower score, a lower tier, one tier-change signal
    lead = wait_for(lambda: Lead.objects.filter(pk=lead.pk, risk_scored_at__gt=before_at).first())
    assert lead.risk_score < before_score
    assert RiskTier.rank(lead.risk_tier) < RiskTier.rank(before_tier)
    last = [c for c in assessed if c["lead_id"] == lead.pk][-1]
    assert (last["previous_tier"], last["new_tier"]) == (before_tier, lead.risk_tier)


@pytest.mark.django_db(transaction=True)
def test_outbound_activity_alone_does_not_enqueue_a_rescore(scoring_worker):
    tenant = Tenant.objects.create(name="Out", slug="out")
    lead = LeadFactory(tenant=tenant)
    activities_ingest(
        tenant=tenant,
        items=[ActivityInput(lead.external_id, "sms_outbound", timezone.now(), "out-1")],
    )
    # a probe task queued after it runs after it on the solo worker
    from churnapp.tasks import rescore_leads

    probe = LeadFactory(tenant=tenant)
    activities_ingest(
        tenant=tenant,
        items=[ActivityInput(probe.external_id, "sms_inbound", timezone.now(), "in-1")],
    )
    wait_for(lambda: Lead.objects.filter(pk=probe.pk, risk_scored_at__isnull=False).exists())
    assert Lead.objects.get(pk=lead.pk).risk_scored_at is None
    assert rescore_leads.name == "churnapp.rescore_leads"


def test_real_time_rescoring_is_routed_off_the_batch_queue():
    """The hourly batch fills "scoring" with chunks of seconds each: a lead that just came
    back is rescored with the flow work instead, by the task's own queue and by name."""
    from celery import current_app

    from churnapp.tasks import rescore_chunk, rescore_leads

    router = current_app.amqp.router

    def queue_of(name: str) -> str:
        return router.route({}, name)["queue"].name

    assert queue_of(rescore_leads.name) == rescore_leads.queue == "interventions"
    assert queue_of(rescore_chunk.name) == rescore_chunk.queue == "scoring"
    assert queue_of("churnapp.rescore_tenant") == "scoring"
