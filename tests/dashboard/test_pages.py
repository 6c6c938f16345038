"""Dashboard pages through Django's test client: access, tenant walls, filters, data."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import Lead, RiskSnapshot, RiskTier
from tracking.events import tracking_event_record
from tracking.models import EventKind

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _at_risk(tenant, tier=RiskTier.CRITICAL, score=0.9, **kw):
    lead = LeadFactory(tenant=tenant, risk_tier=tier, risk_score=score, **kw)
    tracking_event_record(
        tenant_id=tenant.id,
        kind=EventKind.TIER_CHANGED,
        lead_id=lead.id,
        data={
            "previous_tier": "low",
            "new_tier": tier,
            "score": score,
            "model_version": "v7",
            "reasons": [{"factor": "silence", "text": f"quiet {lead.id}", "impact": 0.3}],
        },
    )
    return lead


def test_anonymous_is_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/")


def test_login_page_logs_a_manager_in(client, manager_user):
    response = client.post("/login/", {"username": "maya", "password": "dashboard-pass-1"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_a_user_without_an_agent_row_gets_403():
    user = get_user_model().objects.create_user(username="lonely", password="x")
    response = _client(user).get("/")
    assert response.status_code == 403
    assert b"not an" in response.content


@pytest.mark.parametrize("period", ["7d", "30d", "90d"])
def test_overview_renders_kpis_and_chart_data_for_each_period(manager_user, tenant, period):
    _at_risk(tenant)
    _at_risk(tenant, tier=RiskTier.EARLY_WARNING, score=0.55)
    response = _client(manager_user).get(f"/?period={period}")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="chart-data"' in html and "/assets/plotly.min.js" in html
    charts = response.context["charts"]
    assert charts["tiers"]["critical"] == 1 and charts["tiers"]["early_warning"] == 1
    assert sum(b["leads"] for b in charts["score_histogram"]) == 2
    # Days for a week, weeks beyond.
    expected_points = {"7d": 7, "30d": 5, "90d": 13}[period]
    assert len(charts["churn_series"]) == expected_points
    assert response.context["at_risk"] == 2
    assert f'class="active" data-period="{period}"' in html


def test_overview_feed_shows_only_this_tenants_events(manager_user, tenant, other_tenant):
    mine = _at_risk(tenant)
    theirs = _at_risk(other_tenant)
    html = _client(manager_user).get("/").content.decode()
    assert f"lead {mine.id}<" in html
    assert f"lead {theirs.id}<" not in html


def test_leads_filter_by_tier_agent_and_source(manager_user, tenant):
    agent = manager_user.agent
    a = _at_risk(tenant, assigned_agent=agent, source="zillow")
    b = _at_risk(tenant, tier=RiskTier.ACTIVE_RISK, score=0.7, source="referral")
    LeadFactory(tenant=tenant, risk_tier=RiskTier.LOW, risk_score=0.1)  # not at risk
    client = _client(manager_user)

    def ids(query: str) -> list[int]:
        response = client.get(f"/leads/{query}")
        assert response.status_code == 200
        return [row["lead"].id for row in response.context["rows"]]

    assert ids("") == [a.id, b.id]
    assert ids("?tier=active_risk") == [b.id]
    assert ids(f"?agent={agent.id}") == [a.id]
    assert ids("?source=referral") == [b.id]
    html = client.get("/leads/").content.decode()
    assert f"quiet {a.id}" in html  # reasons from the latest tier change


def test_leads_page_paginates(manager_user, tenant):
    for i in range(30):
        LeadFactory(tenant=tenant, risk_tier=RiskTier.EARLY_WARNING, risk_score=i / 100)
    client = _client(manager_user)
    first = client.get("/leads/").context
    second = client.get("/leads/?page=2").context
    assert len(first["rows"]) == 25 and len(second["rows"]) == 5
    assert first["rows"][0]["lead"].risk_score == 0.29


def test_lead_detail_shows_history_and_is_walled(manager_user, other_manager_user, tenant):
    lead = _at_risk(tenant)
    now = timezone.now()
    for days, score, tier, version in ((3, 0.3, "low", "v6"), (1, 0.9, "critical", "v7")):
        at = now - dt.timedelta(days=days)
        RiskSnapshot.objects.create(
            tenant=tenant,
            lead=lead,
            assessed_at=at,
            day=at.date(),
            score=score,
            tier=tier,
            model_version=version,
        )
    Lead.objects.filter(pk=lead.pk).update(
        risk_model_version="v7", risk_reasons=[{"factor": "silence", "text": "silent 9 days"}]
    )
    response = _client(manager_user).get(f"/leads/{lead.id}/")
    assert response.status_code == 200
    history = response.context["history"]
    assert [(h["score"], h["model_version"]) for h in history] == [(0.3, "v6"), (0.9, "v7")]
    assert response.context["model_version"] == "v7"
    assert response.context["reasons"][0]["text"] == "silent 9 days"
    assert _client(other_manager_user).get(f"/leads/{lead.id}/").status_code == 404


def test_agent_view_lists_only_my_leads_with_a_next_action(agent_user, tenant):
    mine = _at_risk(tenant, assigned_agent=agent_user.agent)
    _at_risk(tenant)  # someone else's
    response = _client(agent_user).get("/me/")
    rows = response.context["rows"]
    assert [r["lead"].id for r in rows] == [mine.id]
    assert rows[0]["next_action"].startswith("No intervention running")


def test_plotly_is_served_from_the_installed_package(client):
    response = client.get("/assets/plotly.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert b"plotly.js" in body[:2000] and len(body) > 1_000_000


@pytest.mark.parametrize("path", ["/", "/?period=90d", "/leads/", "/escalations/", "/me/"])
def test_page_queries_do_not_grow_with_the_number_of_leads(manager_user, tenant, path):
    """Nothing is computed per lead on page load: ten times the leads, the same queries."""
    client = _client(manager_user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    for _ in range(3):
        _at_risk(tenant, assigned_agent=manager_user.agent)
    few = queries()
    for _ in range(30):
        _at_risk(tenant, assigned_agent=manager_user.agent)
    assert queries() == few


def test_an_escalation_row_is_served_only_to_its_tenant(manager_user, tenant, other_tenant):
    from interventions.models import Escalation

    mine, theirs = (_escalation(t) for t in (tenant, other_tenant))
    client = _client(manager_user)
    response = client.get(f"/escalations/{mine.id}/row/")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.strip().startswith("<tr") and f'data-escalation-id="{mine.id}"' in body
    assert client.get(f"/escalations/{theirs.id}/row/").status_code == 404
    assert Escalation.objects.count() == 2


def _escalation(tenant):
    """A critical lead through the real path: risk_assessed -> stage 3 -> escalation."""
    from churnapp.signals import risk_assessed
    from interventions.models import Escalation
    from interventions.services.policy import policy_ensure

    policy_ensure(tenant=tenant)
    lead = LeadFactory(tenant=tenant, risk_tier=RiskTier.CRITICAL, risk_score=0.9)
    risk_assessed.send(
        sender=None,
        tenant_id=tenant.id,
        lead_id=lead.id,
        assessment_id=None,
        previous_tier="low",
        new_tier="critical",
        score=0.9,
        model_version="t",
        reasons=[],
    )
    return Escalation.objects.get(lead=lead)
