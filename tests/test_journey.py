"""The whole pipeline on real parts: a CRM pushes a lead and its history through the API,
real scoring (the rules scorer, as for a tenant with no trained model yet) raises its
tier, interventions plans stage messages in the same transaction, and a real Celery
worker sends them to the provider fake over HTTP. Then the lead replies through the
signed GHL webhook and everything stops."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from churnapp.models import Lead
from interventions.models import Intervention
from interventions.services.policy import policy_ensure
from notifications.models import ChannelConfig, Message
from tests.fakes.ghl import GhlFake
from tests.fixtures_ghl import ghl_event
from tests.waiting import wait_for


@pytest.fixture
def ghl_fake():
    fake = GhlFake().start()
    yield fake
    fake.stop()


@pytest.mark.django_db(transaction=True)
def test_silent_lead_gets_an_intervention_sent_and_a_reply_ends_it(
    celery_worker, tenant, api_client, ghl_fake, post_ghl, settings
):
    # given a tenant whose email goes out through GHL (the fake), no holdout, no quiet hours
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    tenant.ghl_location_id = "loc-acme"
    tenant.save()
    for channel, backend in (("email", "GhlEmailBackend"), ("sms", "GhlSmsBackend")):
        ChannelConfig.objects.create(
            tenant=tenant,
            channel=channel,
            backend=f"notifications.backends.ghl.{backend}",
            options={"base_url": ghl_fake.url, "api_token": ghl_fake.token},
        )
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()

    # when the CRM pushes a lead who went quiet 40 days ago despite follow-ups
    lead_body = {
        "external_id": "c-42",
        "first_name": "Sam",
        "email": "sam@example.com",
        "phone": "+15125550142",
    }
    assert api_client.put("/api/leads/upsert/", lead_body, format="json").status_code in (200, 201)
    now = timezone.now()
    history = [
        ("sms_inbound", 40),
        ("email_open", 41),
        ("sms_outbound", 20),
        ("sms_outbound", 9),
        ("email_outbound", 5),
        ("call_outbound", 2),
    ]
    items = [
        {
            "lead_external_id": "c-42",
            "kind": kind,
            "source_event_id": f"h-{i}",
            "occurred_at": (now - dt.timedelta(days=days)).isoformat(),
        }
        for i, (kind, days) in enumerate(history)
    ]
    response = api_client.post("/api/activities/bulk/", {"items": items}, format="json")
    assert response.status_code == 201, response.content
    lead = Lead.objects.get(tenant=tenant, external_id="c-42")
    # and asks for a score now
    scored = api_client.post(f"/api/leads/{lead.id}/score")
    assert scored.status_code == 200, scored.content

    # then real scoring put the lead at risk, with reasons, and an intervention started
    lead.refresh_from_db()
    assert lead.risk_tier in ("early_warning", "active_risk", "critical"), lead.risk_tier
    assert lead.risk_model_version.startswith("rules-")
    intervention = Intervention.objects.get(lead=lead)
    assert not intervention.is_holdout
    # and the worker sent the lead-facing SMS or email through the provider over HTTP
    message = Message.objects.filter(lead=lead, agent__isnull=True, channel__in=["sms", "email"])
    message = message.order_by("id").first()
    assert message is not None, list(intervention.steps.values("channel", "status", "skip_reason"))
    assert wait_for(lambda: Message.objects.get(pk=message.pk).status == "sent"), (
        Message.objects.get(pk=message.pk).status_reason
    )
    sent = ghl_fake.requests_to("POST", "/conversations/messages")
    assert [r.json()["contactId"] for r in sent].count("c-42") >= 1
    assert {r.json()["type"] for r in sent} <= {"SMS", "Email"}
    intervention.refresh_from_db()
    assert intervention.status == "active"

    # when the lead replies by SMS through the signed GHL webhook
    reply = ghl_event(
        "InboundMessage",
        contactId="c-42",
        messageId="in-42",
        messageType="SMS",
        direction="inbound",
        body="yes still looking",
        locationId="loc-acme",
        dateAdded=timezone.now().isoformat(),
    )
    assert post_ghl(tenant.slug, reply).status_code == 200
    # then the worker processes it and the intervention ends as re-engaged
    assert wait_for(lambda: Intervention.objects.get(pk=intervention.pk).status == "resolved")
    intervention.refresh_from_db()
    assert intervention.outcome == "re_engaged"
    assert not Message.objects.filter(lead=lead, status="queued").exists()
