"""Data for the load tests and benchmarks: activities from the simulator's bulk
generator, dashboard users with sessions, sent emails whose open pixels are callbacks."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from churnapp.models import Agent, AgentRole, Lead, LeadActivity, Tenant
from notifications.email_content import open_pixel_url
from notifications.models import Channel, Message, MessageStatus
from simulator.bulk import bulk_generate
from tracking.models import TrackingEvent


def activity_payloads(*, tenant: Tenant, leads: int, activities: int, seed: int) -> list[dict]:
    """`activities` API items for `leads` new leads of the tenant, drawn by the bulk
    generator. The leads stay; the generated activities are read back as API items and
    deleted, so the API stores them again."""
    bulk_generate(
        tenant=tenant,
        leads=leads,
        activities=activities,
        seed=seed,
        end=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        update_lead_clocks=False,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT l.external_id, a.kind, a.occurred_at, a.source_event_id
              FROM {LeadActivity._meta.db_table} a
              JOIN {Lead._meta.db_table} l ON l.id = a.lead_id
             WHERE a.tenant_id = %s AND a.source_event_id LIKE %s
             ORDER BY a.id
            """,
            [tenant.id, f"bulk:{seed}:%"],
        )
        rows = cursor.fetchall()
        cursor.execute(
            f"DELETE FROM {LeadActivity._meta.db_table} WHERE tenant_id = %s AND source_event_id LIKE %s",
            [tenant.id, f"bulk:{seed}:%"],
        )
    return [
        {
            "lead_external_id": external_id,
            "kind": kind,
            "occurred_at": occurred_at.isoformat(),
            "source_event_id": source_event_id,
        }
        for external_id, kind, occurred_at, source_event_id in rows
    ]


def batched(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def dashboard_sessions(*, tenant: Tenant, count: int, prefix: str) -> list[str]:
    """`count` agents of the tenant, each signed in: their session cookies."""
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"{prefix}-{tenant.slug}-{i}") for i in range(count)]
    )
    Agent.objects.bulk_create(
        [
            Agent(
                tenant=tenant,
                user=user,
                name=user.username,
                role=AgentRole.AGENT,
                email=f"{user.username}@example.com",
            )
            for user in users
        ]
    )
    cookies = []
    for user in users:
        client = Client()
        client.force_login(user)
        cookies.append(f"sessionid={client.cookies['sessionid'].value}")
    return cookies


def sent_emails(*, tenant: Tenant, count: int, prefix: str) -> list[Message]:
    """`count` emails in status sent to the tenant's leads: each open is one lifecycle event."""
    leads = list(Lead.objects.filter(tenant=tenant).values_list("id", flat=True)[:count])
    return Message.objects.bulk_create(
        [
            Message(
                tenant=tenant,
                lead_id=leads[i % len(leads)],
                channel=Channel.EMAIL,
                status=MessageStatus.SENT,
                subject="Still looking?",
                body_text="Are you still looking for a home?",
                idempotency_key=f"{prefix}-{i}",
            )
            for i in range(count)
        ]
    )


def open_pixel_paths(messages: list[Message]) -> list[str]:
    return [urlsplit(open_pixel_url(m.pk)).path for m in messages]


def events_since(tenant_id: int, after_id: int) -> dict[int, float]:
    """The tenant's events after `after_id`: id -> occurred_at (wall seconds)."""
    return {
        event_id: occurred_at.timestamp()
        for event_id, occurred_at in TrackingEvent.objects.filter(
            tenant_id=tenant_id, id__gt=after_id
        ).values_list("id", "occurred_at")
    }


def last_event_id() -> int:
    return TrackingEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
