"""Shared pieces of the security suite: two tenants with real rows, row counts, clients."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from churnapp.factories import AgentFactory, LeadActivityFactory
from churnapp.models import AgentRole, Lead, LeadActivity, Tenant, WebhookEvent
from churnapp.services.api_keys import api_key_create
from churnapp.services.demo import managers_group_sync
from interventions.models import Escalation, Intervention
from notifications.models import (
    ChannelConfig,
    Message,
    MessageEvent,
    PushSubscription,
    Suppression,
)
from tests.tracking.conftest import World
from tracking.events import tracking_event_record
from tracking.models import TrackingEvent
from tracking.services.rollups import rollup_days

# What a request may write; a refused one must leave every count as it was.
COUNTED = {
    "leads": Lead,
    "activities": LeadActivity,
    "webhook_events": WebhookEvent,
    "messages": Message,
    "message_events": MessageEvent,
    "tracking_events": TrackingEvent,
    "suppressions": Suppression,
    "push_subscriptions": PushSubscription,
    "interventions": Intervention,
    "escalations": Escalation,
}


@pytest.fixture(autouse=True)
def public_base_url(settings):
    # Provider signatures cover our public URL; the test client's host is "testserver".
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.IN_APP_WEBHOOK_SECRET = ""
    settings.TWILIO_AUTH_TOKEN = ""


def row_counts() -> dict[str, int]:
    return {name: model.objects.count() for name, model in COUNTED.items()}


def tenant_snapshot(tenant: Tenant) -> dict[str, list]:
    """Every tenant-owned row of `tenant`, all columns: equal before and after means
    nothing of that tenant was changed, added or removed."""
    return {
        name: sorted(model.objects.filter(tenant=tenant).values(), key=lambda r: r["id"])
        for name, model in COUNTED.items()
    }


class Theirs:
    """Tenant B ("other") with one of everything, each carrying text that must never
    appear in an answer to tenant A."""

    EXTERNAL_ID = "theirs-secret-ext-7731"
    FIRST_NAME = "Zebulonsecret"
    EMAIL = "zebulon.secret@theirs.example"
    PHONE = "+15125550177"

    def __init__(self, tenant: Tenant):
        self.tenant = tenant
        tenant.ghl_location_id = "loc-theirs"
        tenant.save(update_fields=["ghl_location_id"])
        world = World(tenant)
        start = timezone.now() - dt.timedelta(days=2)
        self.lead = world.lead(
            external_id=self.EXTERNAL_ID,
            first_name=self.FIRST_NAME,
            email=self.EMAIL,
            phone=self.PHONE,
        )
        self.activity = LeadActivityFactory(lead=self.lead, tenant=tenant)
        self.intervention = world.intervention(started=start, lead=self.lead, channel="sms")
        self.message = self.intervention.steps.get().message
        Message.objects.filter(pk=self.message.pk).update(
            provider_message_id="SMtheirs0001", to_address=self.PHONE, provider="twilio"
        )
        self.message.refresh_from_db()
        self.in_app = Message.objects.create(
            tenant=tenant,
            lead=self.lead,
            channel="in_app",
            idempotency_key="theirs-in-app",
            status="sent",
            sent_at=start,
        )
        self.escalation = world.escalation(self.intervention, opened=start)
        self.event = tracking_event_record(
            tenant_id=tenant.id,
            kind="intervention_started",
            lead_id=self.lead.id,
            intervention_id=self.intervention.id,
            data={"note": self.FIRST_NAME},
        )
        self.push = PushSubscription.objects.create(
            tenant=tenant,
            lead=self.lead,
            endpoint="https://push.theirs.example/sub/1",
            p256dh="p" * 20,
            auth="a" * 10,
        )
        ChannelConfig.objects.update_or_create(
            tenant=tenant,
            channel="sms",
            defaults={
                "backend": "notifications.backends.twilio.TwilioSmsBackend",
                "options": {"auth_token": "theirs-twilio-token"},
            },
        )
        ChannelConfig.objects.update_or_create(
            tenant=tenant,
            channel="in_app",
            defaults={
                "backend": "notifications.backends.locmem.LocmemBackend",
                "options": {"secret": "theirs-in-app-secret"},
            },
        )
        today = timezone.now().date()
        rollup_days(tenant_id=tenant.id, first_day=today - dt.timedelta(days=5), last_day=today)

    @property
    def sentinels(self) -> tuple[str, ...]:
        return (self.EXTERNAL_ID, self.FIRST_NAME, self.EMAIL, self.PHONE)


@pytest.fixture
def theirs(other_tenant) -> Theirs:
    return Theirs(other_tenant)


def manager_user(tenant: Tenant, username: str | None = None) -> User:
    """A staff user in the real "Managers" group, the agent (manager) of `tenant`."""
    user = User.objects.create_user(
        username or f"manager-{tenant.slug}", password="x" * 12, is_staff=True
    )
    user.groups.add(managers_group_sync())
    AgentFactory(tenant=tenant, user=user, role=AgentRole.MANAGER, name=f"Mgr {tenant.slug}")
    return user


@pytest.fixture
def mine(tenant) -> Tenant:
    tenant.ghl_location_id = "loc-mine"
    tenant.save(update_fields=["ghl_location_id"])
    ChannelConfig.objects.update_or_create(
        tenant=tenant,
        channel="sms",
        defaults={
            "backend": "notifications.backends.twilio.TwilioSmsBackend",
            "options": {"auth_token": "mine-twilio-token"},
        },
    )
    ChannelConfig.objects.update_or_create(
        tenant=tenant,
        channel="in_app",
        defaults={
            "backend": "notifications.backends.locmem.LocmemBackend",
            "options": {"secret": "mine-in-app-secret"},
        },
    )
    return tenant


@pytest.fixture
def key_client(mine) -> APIClient:
    _, raw = api_key_create(tenant=mine, name="security")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def session_client(mine) -> APIClient:
    client = APIClient()
    client.force_login(manager_user(mine))
    return client


@pytest.fixture
def anon_client() -> Client:
    return Client()
