"""The dashboard in a real browser: Chromium via Playwright against daphne, a Celery
worker and the real Redis channel layer, with committed data."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

import pytest
import requests
from django.db import connection
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import RiskTier
from churnapp.services.api_keys import api_key_create
from churnapp.signals import risk_assessed
from interventions.models import Escalation, EscalationStatus, Intervention
from interventions.services.policy import policy_ensure
from tests.dashboard.browser import ARTIFACTS, LiveServer
from tests.dashboard.conftest import PASSWORD
from tracking.models import EventKind, TrackingEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("backends")]


@pytest.fixture
def heartbeat_seconds() -> float:
    return 1.0


@pytest.fixture
def daphne_server(browser, transactional_db, heartbeat_seconds):
    server = LiveServer(heartbeat_seconds=heartbeat_seconds)
    server.start()
    yield server
    server.stop()


def _policy(tenant):
    # No holdout and no quiet hours: the lead is treated whatever hour the test runs.
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()
    return policy


def off_loop(fn, *args, **kwargs):
    """Run `fn` in a plain thread, as another process would. Playwright's sync API keeps
    an event loop running in the test's thread, where the after-commit broadcast
    (async_to_sync) refuses to run."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _raise_risk(lead, new_tier: str, previous_tier: str = "low", score: float = 0.6):
    off_loop(_raise_risk_now, lead, new_tier, previous_tier, score)


def _raise_risk_now(lead, new_tier: str, previous_tier: str, score: float):
    """What scoring does when a lead's tier rises: store it, then tell the apps above."""
    type(lead).objects.filter(pk=lead.pk).update(
        risk_tier=new_tier, risk_score=score, risk_scored_at=timezone.now()
    )
    risk_assessed.send(
        sender=None,
        tenant_id=lead.tenant_id,
        lead_id=lead.id,
        assessment_id=None,
        previous_tier=previous_tier,
        new_tier=new_tier,
        score=score,
        model_version="browser-test",
        reasons=[{"factor": "silence", "text": "no reply in 12 days", "impact": 0.2}],
    )


def _login(context, server: LiveServer, username: str, path: str = "/"):
    page = context.new_page()
    page.goto(f"{server.url}/login/?next={path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}{path}")
    live(page)
    return page


def live(page, timeout: float = 30_000):
    page.wait_for_selector('#conn[data-state="live"]', timeout=timeout)


def feed_item(page, kind: str, lead_id: int):
    return page.locator(f"#feed li.kind-{kind}", has=page.locator(f'a[href="/leads/{lead_id}/"]'))


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_manager_sees_the_overview_with_its_charts(
    daphne_server, browser, tenant, manager_user, celery_worker
):
    # given: a tenant with leads at risk and an intervention under way
    _policy(tenant)
    for i, tier in enumerate([RiskTier.EARLY_WARNING, RiskTier.ACTIVE_RISK, RiskTier.CRITICAL]):
        LeadFactory(tenant=tenant, risk_tier=tier, risk_score=0.5 + i / 5)
    lead = LeadFactory(tenant=tenant, assigned_agent=manager_user.agent)
    _raise_risk(lead, RiskTier.EARLY_WARNING)

    # when: the manager logs in
    page = _login(browser(), daphne_server, "maya")

    # then: every chart is drawn by plotly (served by us), KPIs and the feed are there
    page.wait_for_selector('body[data-charts-ready="5"]')
    for chart in ("success", "funnel", "churn", "risk", "escalations"):
        assert page.locator(f"#chart-{chart} .main-svg").count() >= 1, chart
    assert page.locator("#chart-churn .legendtext").first.is_visible()
    assert page.locator("#kpi-at-risk .value").inner_text() == "4"
    assert feed_item(page, "intervention_started", lead.id).count() == 1
    _shot(page, "overview")

    # The period selector redraws the analytics over 7 days: one churn point per day.
    page.click('.periods a[data-period="7d"]')
    page.wait_for_url("**/?period=7d")
    page.wait_for_selector('body[data-charts-ready="5"]')
    assert page.locator('.periods a.active[data-period="7d"]').count() == 1
    points = page.evaluate(
        "document.getElementById('chart-churn').data.find(t => t.name === 'Treated churn').x.length"
    )
    assert points == 7

    page.click(f'#feed a[href="/leads/{lead.id}/"] >> nth=0')
    page.wait_for_selector('body[data-charts-ready="1"]')
    assert page.locator("#chart-history .main-svg").count() >= 1
    assert "no reply in 12 days" in page.inner_text(".reasons")
    assert "stage 1" in page.inner_text("#current-intervention")
    _shot(page, "lead-detail")


# Heartbeats (which also trigger catch-up) far apart: what arrives came by push.
@pytest.mark.parametrize("heartbeat_seconds", [300.0])
def test_activity_through_the_api_shows_the_intervention_live(
    daphne_server, browser, tenant, manager_user, celery_worker, caplog
):
    # given: the manager's overview open and live, and a lead the CRM knows for months
    _policy(tenant)
    lead = LeadFactory(
        tenant=tenant,
        assigned_agent=manager_user.agent,
        crm_created_at=timezone.now() - dt.timedelta(days=90),
    )
    page = _login(browser(), daphne_server, "maya")
    _, key = api_key_create(tenant=tenant, name="crm")
    auth = {"Authorization": f"Api-Key {key}"}

    # when: the CRM posts the lead's activity (replies that stopped 16 days ago) and asks
    # for a score: the real scoring (rules model without a trained one) raises the tier
    last = timezone.now() - dt.timedelta(days=16)
    response = requests.post(
        f"{daphne_server.url}/api/activities/bulk/",
        json={
            "items": [
                {
                    "lead_external_id": lead.external_id,
                    "kind": "email_reply",
                    "occurred_at": (last - dt.timedelta(days=d)).isoformat(),
                    "source_event_id": f"evt-{uuid.uuid4()}",
                }
                for d in range(0, 30, 3)
            ]
        },
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    scored = requests.post(
        f"{daphne_server.url}/api/leads/{lead.id}/score", headers=auth, timeout=30
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["tier"] == RiskTier.EARLY_WARNING

    # then: without a reload, the feed shows the new intervention, then the worker's send
    feed_item(page, "intervention_started", lead.id).wait_for()
    feed_item(page, "intervention_activated", lead.id).wait_for()
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    item = feed_item(page, "intervention_started", lead.id)
    assert "stage 1" in item.inner_text()
    assert not [
        r for r in caplog.records if r.name == "tracking.events" and r.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("heartbeat_seconds", [300.0])
def test_manager_gets_the_alert_and_acknowledges_the_escalation(
    daphne_server, browser, tenant, manager_user, celery_worker
):
    # given: the manager's (empty) escalation queue open, and a lead that goes critical
    # (stage 3 escalates)
    _policy(tenant)
    lead = LeadFactory(tenant=tenant, first_name="Cora", last_name="Critical")
    page = _login(browser(), daphne_server, "maya", path="/escalations/")
    assert page.locator("tr.esc-empty").count() == 1
    _raise_risk(lead, RiskTier.CRITICAL, score=0.93)
    escalation = Escalation.objects.get(lead=lead)

    # then: the escalation alert pops in live (sent by the worker over the channel layer)
    alert = page.locator("#alerts .alert")
    alert.wait_for()
    assert f"/leads/{lead.id}/" in alert.locator("a").get_attribute("href")
    # and its row joins the queue without a reload
    row = page.locator(f'tr.esc-row[data-escalation-id="{escalation.id}"]')
    row.wait_for()
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.locator("tr.esc-empty").count() == 0
    assert page.locator("#esc-new").is_hidden()

    # when: the manager acknowledges it from the queue
    assert "open" in row.locator(".esc-status").inner_text()
    assert row.locator(".countdown").inner_text().endswith("left")
    row.locator("button.ack").click()

    # then: the row says so, the service stamped it and the lifecycle log has it
    page.wait_for_function(
        'id => document.querySelector(`tr[data-escalation-id="${id}"] .esc-status`)'
        ".textContent === 'acknowledged'",
        arg=escalation.id,
    )
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.ACKNOWLEDGED
    assert escalation.acknowledged_at is not None
    assert escalation.manager_id == manager_user.agent.id
    assert TrackingEvent.objects.filter(
        escalation_id=escalation.id, kind=EventKind.ESCALATION_ACKNOWLEDGED
    ).exists()
    assert row.locator("button.ack").count() == 0


def test_a_cut_socket_reconnects_and_fills_in_missed_events(
    daphne_server, browser, tenant, manager_user, celery_worker
):
    # given: the overview open and live
    _policy(tenant)
    before, missed = (LeadFactory(tenant=tenant) for _ in range(2))
    page = _login(browser(), daphne_server, "maya")
    _raise_risk(before, RiskTier.EARLY_WARNING)
    feed_item(page, "intervention_started", before.id).wait_for()

    # when: the server goes away, events happen meanwhile, and the server comes back
    daphne_server.stop()
    page.wait_for_selector('#conn[data-state="down"]')
    _raise_risk(missed, RiskTier.ACTIVE_RISK)
    started = TrackingEvent.objects.get(lead_id=missed.id, kind=EventKind.INTERVENTION_STARTED)
    assert feed_item(page, "intervention_started", missed.id).count() == 0
    daphne_server.start()

    # then: the page reconnects by itself and fetches what it missed from the log
    live(page, timeout=60_000)
    item = feed_item(page, "intervention_started", missed.id)
    item.wait_for()
    assert item.get_attribute("data-event-id") == str(started.id)
    assert "stage 2" in item.inner_text()
    # Nothing shown twice.
    assert feed_item(page, "intervention_started", before.id).count() == 1
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_another_tenants_manager_sees_none_of_it(
    daphne_server, browser, tenant, other_tenant, manager_user, other_manager_user, celery_worker
):
    # given: both managers on their overview
    _policy(tenant)
    lead = LeadFactory(tenant=tenant, first_name="Walled", last_name="Lead")
    mine = _login(browser(), daphne_server, "maya")
    theirs = _login(browser(), daphne_server, "otto")

    # when: a lead of the first tenant goes critical (intervention, escalation, alert)
    _raise_risk(lead, RiskTier.CRITICAL, score=0.95)
    intervention = Intervention.objects.get(lead=lead)
    escalation = Escalation.objects.get(lead=lead)
    feed_item(mine, "escalated", lead.id).wait_for()
    mine.locator("#alerts .alert").wait_for()

    # then: the other tenant's manager got nothing live, nor after catching up...
    # (two heartbeats later: anything broadcast to this socket would be here by now)
    t0 = theirs.evaluate("Date.now()")
    theirs.wait_for_function("t0 => window.Dashboard.state.lastBeat > t0 + 1500", arg=t0)
    assert theirs.locator(f'#feed a[href="/leads/{lead.id}/"]').count() == 0
    assert theirs.locator("#alerts .alert").count() == 0
    theirs.reload()
    live(theirs)
    assert theirs.locator(f'#feed a[href="/leads/{lead.id}/"]').count() == 0
    assert theirs.locator("#kpi-at-risk .value").inner_text() == "0"
    # ...and cannot reach it by page or API
    theirs.goto(f"{daphne_server.url}/leads/")
    assert "Walled" not in theirs.inner_text("#leads-table")
    assert theirs.goto(f"{daphne_server.url}/leads/{lead.id}/").status == 404
    theirs.goto(f"{daphne_server.url}/escalations/")
    assert theirs.locator(f'[data-escalation-id="{escalation.id}"]').count() == 0
    api = theirs.request.get(f"{daphne_server.url}/api/tracking/events/?after_id=0")
    assert api.ok and all(e["lead_id"] != lead.id for e in api.json()["results"])
    ack = theirs.request.post(
        f"{daphne_server.url}/api/escalations/{escalation.id}/acknowledge/",
        headers={"X-CSRFToken": _csrf(theirs)},
        data={"note": ""},
    )
    assert ack.status == 404
    assert Intervention.objects.get(pk=intervention.pk).tenant_id == tenant.id
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN


def _csrf(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
