"""factory_boy factories for churnapp's models, shared by every app's tests."""

from __future__ import annotations

import datetime as dt

import factory
from django.utils import timezone

from churnapp.models import (
    KIND_CHANNEL,
    KIND_DIRECTION,
    ActivityKind,
    Agent,
    AgentRole,
    Lead,
    LeadActivity,
    Tenant,
)


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Brokerage {n}")
    slug = factory.Sequence(lambda n: f"brokerage-{n}")
    timezone = "America/New_York"


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    role = AgentRole.AGENT
    email = factory.Sequence(lambda n: f"agent{n}@example.com")
    phone = factory.Sequence(lambda n: f"+1512555{n % 10000:04d}")
    ghl_user_id = factory.Sequence(lambda n: f"ghl-user-{n}")


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    tenant = factory.SubFactory(TenantFactory)
    external_id = factory.Sequence(lambda n: f"contact-{n}")
    first_name = factory.Sequence(lambda n: f"Lead{n}")
    last_name = "Buyer"
    email = factory.Sequence(lambda n: f"lead{n}@example.com")
    phone = factory.Sequence(lambda n: f"+1737555{n % 10000:04d}")
    timezone = "America/Chicago"
    source = "zillow"
    pipeline_stage = "new"


class LeadActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LeadActivity

    lead = factory.SubFactory(LeadFactory)
    tenant = factory.SelfAttribute("lead.tenant")
    kind = ActivityKind.SMS_INBOUND
    direction = factory.LazyAttribute(lambda o: KIND_DIRECTION[o.kind])
    channel = factory.LazyAttribute(lambda o: KIND_CHANNEL[o.kind])
    occurred_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(hours=1))
    source_event_id = factory.Sequence(lambda n: f"evt-{n}")
