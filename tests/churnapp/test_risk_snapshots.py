"""Daily risk snapshots (RiskSnapshot): one per lead per day from the day's first score,
never a second one, nothing left by a failed chunk, read back as the lead's history,
removed with the lead or tenant; migration 0008 moves the old daily assessments."""

import datetime as dt
import importlib

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

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
from churnapp.risk_selectors import lead_risk_history
from churnapp.services.scoring import (
    leads_rescore,
    leads_score,
    scores_apply,
    scoring_chunk_process,
    scoring_run_start,
)
from churnapp.signals import risk_assessed_many
from tests.churnapp.test_risk_batch import _history


def _at(day_offset: int, hour: int) -> dt.datetime:
    today = timezone.now().astimezone(dt.UTC).date()
    return dt.datetime.combine(today + dt.timedelta(days=day_offset), dt.time(hour), dt.UTC)


def test_the_days_first_score_writes_the_one_snapshot_of_the_day(tenant):
    # given: a lead never scored
    lead = _history(tenant, 3, timezone.now())[-1]
    # when: scored three times today, then once tomorrow
    for hour in (1, 2, 3):
        leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(0, hour))
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(1, 1))
    # then: one snapshot per day, each the day's first score as the lead carried it
    snapshots = list(RiskSnapshot.objects.filter(lead=lead).order_by("day"))
    assert [(s.day, s.assessed_at) for s in snapshots] == [
        (_at(0, 1).date(), _at(0, 1)),
        (_at(1, 1).date(), _at(1, 1)),
    ]
    lead.refresh_from_db()
    last = snapshots[-1]
    assert (last.score, last.tier, last.model_version, last.tenant_id) == (
        lead.risk_score,
        lead.risk_tier,
        lead.risk_model_version,
        tenant.id,
    )
    # the tier changed once (unscored -> its tier): one assessment, not a daily row
    assert list(RiskAssessment.objects.filter(lead=lead).values_list("kind", flat=True)) == [
        AssessmentKind.TIER_CHANGE
    ]


def test_a_reset_score_clock_does_not_make_a_second_snapshot(tenant):
    lead = _history(tenant, 2, timezone.now())[-1]
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(0, 1))
    first = RiskSnapshot.objects.get(lead=lead)
    # given: the lead looks unscored again (a CRM re-import, a manual fix)
    Lead.objects.filter(pk=lead.pk).update(risk_scored_at=None, risk_tier=RiskTier.UNSCORED)
    # when: scored again the same day
    applied = leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(0, 2))
    # then: scored (and its tier change recorded), the day's snapshot kept as it was
    assert applied.scored == 1 and applied.tier_changes == 1
    assert list(RiskSnapshot.objects.filter(lead=lead)) == [first]
    assert RiskSnapshot.objects.get(lead=lead).assessed_at == _at(0, 1)


def test_a_chunk_that_fails_after_writing_leaves_no_snapshot_and_its_retry_writes_one(tenant):
    # given: 6 leads in chunks of 3, and a receiver that fails on the first tier change
    leads = _history(tenant, 6, timezone.now())
    run, _ = scoring_run_start(tenant_id=tenant.id, slot=_at(0, 0), chunk_size=3)
    failures = []

    def crash_once(**kwargs):
        if not failures:
            failures.append(kwargs["changes"][0]["lead_id"])
            raise RuntimeError("worker lost mid-chunk")

    risk_assessed_many.connect(crash_once, weak=False)
    try:
        chunks = list(run.chunks.order_by("index"))
        with pytest.raises(RuntimeError):
            scoring_chunk_process(chunk_id=chunks[0].pk)
        # then: the failed chunk wrote nothing (snapshots roll back with the scores)
        assert ScoringChunk.objects.get(pk=chunks[0].pk).status == ScoringChunkStatus.FAILED
        assert not RiskSnapshot.objects.filter(lead__tenant=tenant).exists()
        assert not Lead.objects.filter(tenant=tenant, risk_scored_at__isnull=False).exists()
        # when: the chunk is retried, the run finishes, and the slot is processed again
        for chunk in chunks:
            scoring_chunk_process(chunk_id=chunk.pk)
        for chunk in chunks:
            assert scoring_chunk_process(chunk_id=chunk.pk) is None
    finally:
        risk_assessed_many.disconnect(crash_once)
    # then: exactly one snapshot per lead, one tier change per lead
    assert ScoringRun.objects.get(pk=run.pk).finished_at is not None
    per_lead = sorted(RiskSnapshot.objects.values_list("lead_id", flat=True))
    assert per_lead == sorted(lead.pk for lead in leads)
    assert RiskAssessment.objects.filter(tenant=tenant).count() == 6


def test_history_merges_tier_changes_and_snapshots_newest_first(tenant, other_tenant):
    lead = _history(tenant, 12, timezone.now())[-1]  # the most silent: never "low"
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(-2, 9))
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(-1, 9))
    Lead.objects.filter(pk=lead.pk).update(risk_tier=RiskTier.LOW)  # so the next one changes
    leads_rescore(tenant_id=tenant.id, lead_ids=[lead.pk], as_of=_at(-1, 10))
    # a row of another tenant's that names this lead is not this lead's history
    RiskSnapshot.objects.create(
        lead=lead,
        tenant=other_tenant,
        day=_at(0, 0).date(),
        assessed_at=_at(0, 0),
        score=0.5,
        tier="early_warning",
        model_version="theirs",
    )
    history = lead_risk_history(lead=lead)
    assert [(h.kind, h.assessed_at) for h in history] == [
        (AssessmentKind.TIER_CHANGE, _at(-1, 10)),
        (AssessmentKind.DAILY, _at(-1, 9)),
        (AssessmentKind.TIER_CHANGE, _at(-2, 9)),  # unscored -> its tier, same score as:
        (AssessmentKind.DAILY, _at(-2, 9)),
    ]
    change, daily = history[0], history[1]
    assert change.id and change.previous_tier == RiskTier.LOW and change.reasons
    assert (daily.id, daily.previous_tier, daily.reasons) == (None, None, [])
    assert [h.kind for h in lead_risk_history(lead=lead, limit=2)] == [
        AssessmentKind.TIER_CHANGE,
        AssessmentKind.DAILY,
    ]


def test_history_in_the_api_shows_snapshots_without_id_or_reasons(api_client, tenant):
    lead = _history(tenant, 2, timezone.now())[-1]
    response = api_client.post(f"/api/leads/{lead.pk}/score")
    assert response.status_code == 200, response.content
    by_kind = {h["kind"]: h for h in response.json()["history"]}
    assert set(by_kind) == {"daily", "tier_change"}
    assert by_kind["daily"]["id"] is None and by_kind["daily"]["previous_tier"] is None
    assert by_kind["daily"]["reasons"] == []
    assert by_kind["daily"]["score"] == by_kind["tier_change"]["score"]
    assert by_kind["tier_change"]["id"] and by_kind["tier_change"]["reasons"]


def test_snapshots_go_with_their_lead_and_their_tenant(tenant, other_tenant):
    mine = _history(tenant, 2, timezone.now())
    theirs = _history(other_tenant, 1, timezone.now())
    for t, leads in ((tenant, mine), (other_tenant, theirs)):
        leads_rescore(tenant_id=t.id, lead_ids=[lead.pk for lead in leads], as_of=_at(0, 1))
    assert RiskSnapshot.objects.count() == 3
    mine[0].delete()
    assert sorted(RiskSnapshot.objects.values_list("lead_id", flat=True)) == sorted(
        [mine[1].pk, theirs[0].pk]
    )
    Tenant.objects.filter(pk=tenant.pk).delete()
    assert list(RiskSnapshot.objects.values_list("lead_id", flat=True)) == [theirs[0].pk]


BEFORE = [("churnapp", "0007_drop_redundant_lead_and_assessment_indexes")]
AFTER = [("churnapp", "0008_risksnapshot")]


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def _assessment_rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lead_id, kind, day, score, tier, model_version FROM churnapp_riskassessment"
            " ORDER BY lead_id, kind, day"
        )
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)
def test_migration_0008_moves_daily_assessments_to_snapshots_and_back(monkeypatch):
    migration = importlib.import_module("churnapp.migrations.0008_risksnapshot")
    monkeypatch.setattr(migration, "BATCH", 2)  # several ranges, one of them empty of daily
    tenant = Tenant.objects.create(name="Migrate", slug="migrate")
    leads = _history(tenant, 3, timezone.now())
    days = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
    try:
        _migrate(BEFORE)
        # given: the old layout, daily rows (with reasons) among tier changes
        with connection.cursor() as cursor:
            for lead in leads:
                for kind, day in [("tier_change", days[0])] + [("daily", d) for d in days]:
                    cursor.execute(
                        """INSERT INTO churnapp_riskassessment (tenant_id, lead_id, kind,
                            assessed_at, day, score, tier, previous_tier, model_version,
                            reasons, run_id)
                        VALUES (%s, %s, %s, %s, %s, %s, 'critical', 'low', 'v1',
                                '[{"factor": "replies"}]', NULL)""",
                        [tenant.id, lead.pk, kind, f"{day} 09:00Z", day, lead.pk / 1e9],
                    )
        # when
        _migrate(AFTER)
        # then: every daily row is a snapshot, the tier changes stay
        snapshots = sorted(
            RiskSnapshot.objects.values_list(
                "lead_id", "tenant_id", "day", "assessed_at", "score", "tier", "model_version"
            )
        )
        assert snapshots == [
            (
                lead.pk,
                tenant.id,
                day,
                dt.datetime.combine(day, dt.time(9), dt.UTC),
                lead.pk / 1e9,
                "critical",
                "v1",
            )
            for lead in leads
            for day in days
        ]
        assert {row[1] for row in _assessment_rows()} == {"tier_change"}
        assert len(_assessment_rows()) == 3
        # when: reversed
        _migrate(BEFORE)
        # then: the daily rows are back (without what a snapshot never kept)
        assert _assessment_rows() == sorted(
            [(lead.pk, "tier_change", days[0], lead.pk / 1e9, "critical", "v1") for lead in leads]
            + [
                (lead.pk, "daily", day, lead.pk / 1e9, "critical", "v1")
                for lead in leads
                for day in days
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('churnapp_risksnapshot')")
            assert cursor.fetchone() == (None,)
            # and the old uniqueness holds again
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'riskassessment_one_daily_per_lead'"
            )
            assert "UNIQUE" in cursor.fetchone()[0]
    finally:
        # Every app back to its latest migration: going back to churnapp 0007 also
        # unapplied any later migration of another app that depends on churnapp 0008.
        executor = MigrationExecutor(connection)
        _migrate(executor.loader.graph.leaf_nodes())


def test_the_write_stores_each_leads_score_tier_and_reasons_exactly_as_computed(tenant):
    # given: leads scored (features, model, reasons) but not written yet
    leads = _history(tenant, 8, timezone.now())
    scored = leads_score(tenant_id=tenant.id, as_of=_at(0, 1), lead_ids=[x.pk for x in leads])
    scored.reasons[0] = [
        {"factor": "replies", "text": 'quote " and \\ backslash, {brace}', "impact": 0.5}
    ]
    # when: written with the columns as array literals and the reasons as one document
    with transaction.atomic():
        applied = scores_apply(tenant_id=tenant.id, scored=scored)
    # then: every lead holds its own values, bit for bit, and each tier change its reasons
    assert applied.scored == 8
    stored = {lead.pk: lead for lead in Lead.objects.filter(pk__in=scored.lead_ids.tolist())}
    for i, lead_id in enumerate(scored.lead_ids.tolist()):
        lead = stored[lead_id]
        assert lead.risk_score == scored.scores[i]
        assert lead.risk_tier == scored.tiers[i]
        assert lead.risk_reasons == scored.reasons[i]
        change = RiskAssessment.objects.get(lead_id=lead_id)
        assert (change.score, change.tier, change.reasons) == (
            scored.scores[i],
            scored.tiers[i],
            scored.reasons[i],
        )
    assert len({lead.risk_score for lead in stored.values()}) == 8
