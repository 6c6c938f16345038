"""Fixtures for the interventions tests: a tenant with agents, a lead, a policy."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import AgentRole
from churnapp.signals import risk_assessed
from interventions.services.policy import policy_ensure


@pytest.fixture(autouse=True)
def locmem_backends(settings):
    """Every channel delivers to the in-memory backend (a real backend of ours)."""
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 0.05
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 0.5
    return settings


@pytest.fixture
def manager(tenant):
    return AgentFactory(tenant=tenant, role=AgentRole.MANAGER, name="Maya Manager")


@pytest.fixture
def agent(tenant):
    return AgentFactory(tenant=tenant, name="Alex Agent")


@pytest.fixture
def lead(tenant, agent):
    return LeadFactory(tenant=tenant, assigned_agent=agent, timezone="UTC")


@pytest.fixture
def policy(tenant):
    """The tenant's default policy with no holdout and quiet hours off, so a test that is
    not about them is not affected by the hour it runs at."""
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()
    return policy


@pytest.fixture
def assess():
    """Send risk_assessed the way scoring does."""

    def send(lead, new_tier, previous_tier="low", score=0.6, reasons=None):
        # Scoring writes the lead's current tier, then tells the apps above.
        type(lead).objects.filter(pk=lead.pk).update(risk_tier=new_tier, risk_score=score)
        risk_assessed.send(
            sender=None,
            tenant_id=lead.tenant_id,
            lead_id=lead.id,
            assessment_id=None,
            previous_tier=previous_tier,
            new_tier=new_tier,
            score=score,
            model_version="test",
            reasons=reasons
            or [{"factor": "silence", "text": "no reply in 12 days", "impact": 0.2}],
        )

    return send


@pytest.fixture
def sms_only(policy):
    """Every stage's plan is one SMS to the lead, no fallback, no manager escalation."""
    policy.stages.update(
        channel_plan=[{"channel": "sms", "to": "lead", "fallback": []}],
        escalate_to_manager=False,
    )
    return policy
