"""The README's overview screenshot, from a tenant with a month of interventions.

Slow (not in `make test`). Run it with UPDATE_DOCS_SCREENSHOT=1 to rewrite
docs/dashboard-overview.png; otherwise the picture goes to the test artifacts."""

from __future__ import annotations

import datetime as dt
import os
import random
import time

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import RiskTier
from interventions.models import Escalation, Intervention, Outcome
from interventions.services.escalations import escalation_acknowledge, escalation_resolve
from interventions.services.orchestration import intervention_resolve
from notifications.models import Message
from tests.dashboard.browser import ARTIFACTS, LiveServer
from tests.dashboard.test_browser import _login, _policy, _raise_risk, off_loop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("backends"),
]

TIERS = [(0.8, RiskTier.CRITICAL), (0.65, RiskTier.ACTIVE_RISK), (0.5, RiskTier.EARLY_WARNING)]


def _tier(score: float) -> str:
    return next((tier for edge, tier in TIERS if score >= edge), RiskTier.LOW)


def _wait(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_overview_screenshot_for_the_readme(browser, tenant, manager_user, celery_worker):
    rng = random.Random(7)
    policy = _policy(tenant)
    policy.holdout_percent = 30
    policy.save()
    agents = [manager_user.agent, *(AgentFactory(tenant=tenant) for _ in range(3))]
    sources = ["zillow", "referral", "website", "open_house"]
    now = timezone.now()

    # A scored book of leads, as a scoring run leaves it.
    for _ in range(400):
        score = rng.betavariate(2, 4)
        LeadFactory(
            tenant=tenant,
            risk_score=score,
            risk_tier=_tier(score),
            source=rng.choice(sources),
            assigned_agent=rng.choice(agents),
        )
    # Leads whose risk rose: interventions, sends by the worker, escalations.
    risers = [
        LeadFactory(tenant=tenant, source=rng.choice(sources), assigned_agent=rng.choice(agents))
        for _ in range(90)
    ]
    for lead in risers:
        tier = rng.choices(
            [RiskTier.EARLY_WARNING, RiskTier.ACTIVE_RISK, RiskTier.CRITICAL], [5, 3, 2]
        )[0]
        _raise_risk(lead, tier, score={"early_warning": 0.56, "active_risk": 0.7}.get(tier, 0.87))
    assert _wait(lambda: not Message.objects.filter(status__in=["queued", "sending"]).exists())

    # Outcomes over the last four weeks: the treated do better than the holdout.
    for iv in Intervention.objects.filter(tenant=tenant).order_by("id")[:75]:
        p_success = 0.3 if iv.is_holdout else {1: 0.55, 2: 0.62, 3: 0.7}[iv.stage]
        outcome = (
            rng.choice([Outcome.RE_ENGAGED, Outcome.CONVERTED])
            if rng.random() < p_success
            else Outcome.CHURNED
        )
        off_loop(intervention_resolve, intervention=iv, outcome=outcome)
        start = now - dt.timedelta(days=rng.uniform(1, 28))
        Intervention.objects.filter(pk=iv.pk).update(
            detected_at=start,
            planned_at=start,
            activated_at=start + dt.timedelta(minutes=rng.uniform(1, 30)),
            resolved_at=start + dt.timedelta(hours=rng.uniform(6, 60)),
        )
    for message in Message.objects.filter(tenant=tenant, sent_at__isnull=False):
        later = message.sent_at + dt.timedelta(seconds=rng.uniform(2, 600))
        fields = {}
        if rng.random() < 0.9:
            fields["delivered_at"] = later
            if rng.random() < 0.5:
                fields["opened_at"] = later + dt.timedelta(minutes=5)
                if rng.random() < 0.45:
                    fields["replied_at"] = later + dt.timedelta(minutes=30)
        Message.objects.filter(pk=message.pk).update(**fields)
    for n, escalation in enumerate(
        Escalation.objects.filter(tenant=tenant, status="open").order_by("id")
    ):
        if n % 3 == 0:
            off_loop(escalation_acknowledge, escalation=escalation, by=manager_user.agent)
        if n % 3 == 1:
            off_loop(escalation_resolve, escalation=escalation, by=manager_user.agent)

    server = LiveServer(env={"TRACKING_MIN_ARM_SIZE": "10"})
    server.start()
    try:
        page = _login(browser(), server, "maya")
        page.wait_for_selector('body[data-charts-ready="5"]')
        assert "Too few" not in page.inner_text("#kpi-churn")
        page.wait_for_timeout(500)  # let plotly finish its transitions before the picture
        target = (
            django_settings.BASE_DIR / "docs" / "dashboard-overview.png"
            if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
            else ARTIFACTS / "overview-rich.png"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
    finally:
        server.stop()
