"""The demo hook: the demo tenant is seeded from the simulator once, through the API."""

from __future__ import annotations

import pytest

from churnapp.models import Agent, Lead, LeadActivity
from churnapp.services.demo import demo_setup
from notifications.models import ChannelConfig
from simulator.live import demo_seed

pytestmark = pytest.mark.django_db


def test_demo_seed_fills_the_demo_tenant_once():
    tenant = demo_setup().tenant
    posted = demo_seed(tenant=tenant, leads=40, seed=3, history_days=7)
    assert posted > 40
    leads = Lead.objects.filter(tenant=tenant, external_id__startswith="sim-3-")
    assert leads.count() == 40
    assert leads.exclude(assigned_agent=None).count() == 40
    assert LeadActivity.objects.filter(tenant_id=tenant.id).count() > 40
    assert Agent.objects.filter(tenant=tenant, role="agent").count() == 3
    sms = ChannelConfig.objects.get(tenant=tenant, channel="sms")
    assert sms.backend.endswith("GhlSmsBackend") and sms.options["base_url"].startswith(
        "http://127.0.0.1:"
    )
    # Agent alerts stay on the real dashboard in the demo.
    assert not ChannelConfig.objects.filter(tenant=tenant, channel="agent_alert").exists()
    assert demo_seed(tenant=tenant, leads=40, seed=3, history_days=7) == 0
    assert Lead.objects.filter(tenant=tenant).count() == 40
