"""Risk API: a lead's risk and history, score now, leads by tier; tenant walls; errors."""

import datetime as dt

from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import LeadInterventionEvent, RiskThresholds
from churnapp.risk_selectors import lead_features, tenant_thresholds, tier_for_score
from churnapp.services.activities import ActivityInput, activities_ingest
from churnapp.services.intervention_history import lead_intervention_record


def _silent_lead(tenant, days_silent: int, tag: str):
    lead = LeadFactory(tenant=tenant, crm_created_at=timezone.now() - dt.timedelta(days=90))
    last = timezone.now() - dt.timedelta(days=days_silent)
    items = [
        ActivityInput(lead.external_id, "email_reply", last - dt.timedelta(days=d), f"{tag}-{d}")
        for d in range(0, 30, 3)
    ]
    activities_ingest(tenant=tenant, items=items)
    return lead


def test_score_now_then_read_risk_with_reasons_and_history(api_client, tenant):
    lead = _silent_lead(tenant, 20, "a")
    response = api_client.post(f"/api/leads/{lead.pk}/score")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == "rules-v1"
    assert 0 < body["score"] < 1 and body["tier"] in ("early_warning", "active_risk", "critical")
    assert any(r["text"] == "no reply in 20 days" for r in body["reasons"]), body["reasons"]
    assert body["thresholds"] == {"early_warning": 0.35, "active_risk": 0.55, "critical": 0.75}
    assert [h["kind"] for h in body["history"]] == ["daily", "tier_change"] or [
        h["kind"] for h in body["history"]
    ] == ["tier_change", "daily"]
    read = api_client.get(f"/api/leads/{lead.pk}/risk").json()
    assert read["score"] == body["score"] and read["reasons"] == body["reasons"]


def test_leads_filter_by_tier_riskiest_first(api_client, tenant):
    fresh = _silent_lead(tenant, 1, "f")
    cold = _silent_lead(tenant, 40, "c")
    for lead in (fresh, cold):
        api_client.post(f"/api/leads/{lead.pk}/score")
    every = api_client.get("/api/risk/leads").json()
    assert [r["lead_id"] for r in every["results"]] == [cold.pk, fresh.pk]
    cold_tier = every["results"][0]["tier"]
    only = api_client.get(f"/api/risk/leads?tier={cold_tier}").json()
    assert [r["lead_id"] for r in only["results"]] == [cold.pk]
    bad = api_client.get("/api/risk/leads?tier=lukewarm")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"


def test_other_tenants_leads_are_not_found(api_client, other_tenant):
    foreign = LeadFactory(tenant=other_tenant)
    for response in (
        api_client.get(f"/api/leads/{foreign.pk}/risk"),
        api_client.post(f"/api/leads/{foreign.pk}/score"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_thresholds_are_one_table_per_tenant(tenant):
    thresholds = tenant_thresholds(tenant_id=tenant.id)
    assert tier_for_score(0.5, thresholds) == "early_warning"
    RiskThresholds.objects.filter(pk=thresholds.pk).update(
        early_warning=0.2, active_risk=0.4, critical=0.6
    )
    thresholds = tenant_thresholds(tenant_id=tenant.id)
    assert tier_for_score(0.5, thresholds) == "active_risk"
    assert (
        tier_for_score(0.6, thresholds) == "critical" and tier_for_score(0.1, thresholds) == "low"
    )


def test_intervention_history_is_recorded_once_and_read_point_in_time(tenant):
    lead = LeadFactory(tenant=tenant)
    at = timezone.now() - dt.timedelta(days=3)
    first = lead_intervention_record(
        lead_id=lead.pk, stage=1, outcome="started", at=at, key="iv-1:start"
    )
    again = lead_intervention_record(
        lead_id=lead.pk, stage=1, outcome="started", at=at, key="iv-1:start"
    )
    lead_intervention_record(
        lead_id=lead.pk,
        stage=1,
        outcome="no_response",
        at=at + dt.timedelta(days=2),
        key="iv-1:end",
    )
    assert first.pk == again.pk and LeadInterventionEvent.objects.filter(lead=lead).count() == 2
    from churnapp.ml.features import RAW_COLUMNS

    col = {c: i for i, c in enumerate(RAW_COLUMNS)}
    now = lead_features(tenant_id=tenant.id, as_of=timezone.now(), lead_ids=[lead.pk]).raw[0]
    assert now[col["interventions_90d"]] == 1 and now[col["interventions_no_response_90d"]] == 1
    assert round(now[col["days_since_intervention"]]) == 1
    between = lead_features(
        tenant_id=tenant.id, as_of=at + dt.timedelta(days=1), lead_ids=[lead.pk]
    ).raw[0]
    assert between[col["interventions_no_response_90d"]] == 0  # not yet known then


def test_without_enough_history_training_says_so_and_rules_score(tenant):
    import pytest
    from django.core.management import CommandError, call_command

    from churnapp.models import ChurnModel
    from churnapp.services.model_registry import scorer_for_tenant

    _silent_lead(tenant, 5, "h")
    with pytest.raises(CommandError, match="Not enough labelled history"):
        call_command("churn_train", "--tenant", tenant.slug)
    assert not ChurnModel.objects.filter(tenant=tenant).exists()
    assert scorer_for_tenant(tenant_id=tenant.id).version == "rules-v1"


def test_admin_refuses_unordered_thresholds(tenant, client):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client.force_login(admin)
    thresholds = tenant_thresholds(tenant_id=tenant.id)
    url = f"/admin/churnapp/riskthresholds/{thresholds.pk}/change/"
    response = client.post(
        url, {"tenant": tenant.pk, "early_warning": 0.6, "active_risk": 0.5, "critical": 0.9}
    )
    assert response.status_code == 200 and b"must rise strictly" in response.content
    response = client.post(
        url, {"tenant": tenant.pk, "early_warning": 0.3, "active_risk": 0.5, "critical": 0.9}
    )
    assert response.status_code == 302
    assert tenant_thresholds(tenant_id=tenant.id).critical == 0.9
