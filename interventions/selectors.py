"""Reads of interventions that several callers share."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, QuerySet

from churnapp.models import Lead, Tenant
from interventions.models import Escalation, EscalationStatus, Intervention
from notifications.models import Message, MessageStatus

# Messages that never reached the lead do not count against frequency caps.
_NOT_DELIVERED = (MessageStatus.SUPPRESSED, MessageStatus.FAILED, MessageStatus.DEAD, "cancelled")


@dataclass
class SendCounts:
    total: int
    by_channel: dict[str, int]


def lead_sends_since(*, lead: Lead, since: dt.datetime) -> SendCounts:
    rows = (
        Message.objects.filter(lead=lead, agent__isnull=True, created_at__gte=since)
        .exclude(status__in=_NOT_DELIVERED)
        .values("channel")
        .annotate(n=Count("id"))
    )
    by_channel = {row["channel"]: row["n"] for row in rows}
    return SendCounts(total=sum(by_channel.values()), by_channel=by_channel)


def interventions_for_tenant(*, tenant: Tenant) -> QuerySet[Intervention]:
    return (
        Intervention.objects.filter(tenant=tenant)
        .select_related("lead", "variant")
        .order_by("-planned_at", "-id")
    )


def escalation_queue(*, tenant: Tenant) -> QuerySet[Escalation]:
    """Open and acknowledged escalations, soonest SLA deadline first."""
    return (
        Escalation.objects.filter(tenant=tenant)
        .exclude(status=EscalationStatus.RESOLVED)
        .select_related("lead", "manager", "intervention")
        .order_by("sla_due_at", "id")
    )
