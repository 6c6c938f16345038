"""Reads of interventions that several callers share."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

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


def lead_sends_in_windows(
    *, lead: Lead, now: dt.datetime, windows: tuple[dt.timedelta, ...]
) -> list[SendCounts]:
    """`lead_sends_since(since=now - w)` for every window `w`, in one query: the widest
    window is read once, grouped by channel, each window counted with a FILTER."""
    return leads_sends_in_windows(lead_ids=[lead.pk], now=now, windows=windows)[lead.pk]


def leads_sends_in_windows(
    *, lead_ids: list[int], now: dt.datetime, windows: tuple[dt.timedelta, ...]
) -> dict[int, list[SendCounts]]:
    """`lead_sends_in_windows` for many leads in one query, by lead id (every lead asked
    for has an entry, empty counts when it had no sends)."""
    since = [now - w for w in windows]
    per_lead: dict[int, list[dict[str, int]]] = {
        lead_id: [{} for _ in windows] for lead_id in lead_ids
    }
    if lead_ids:
        rows = (
            Message.objects.filter(
                lead_id__in=lead_ids, agent__isnull=True, created_at__gte=min(since)
            )
            .exclude(status__in=_NOT_DELIVERED)
            .values("lead_id", "channel")
            .annotate(
                **{
                    f"n{i}": Count("id", filter=Q(created_at__gte=start))
                    for i, start in enumerate(since)
                }
            )
            .order_by()
        )
        for row in rows:
            for i, by_channel in enumerate(per_lead[row["lead_id"]]):
                if row[f"n{i}"]:
                    by_channel[row["channel"]] = row[f"n{i}"]
    return {
        lead_id: [SendCounts(total=sum(c.values()), by_channel=c) for c in windows_]
        for lead_id, windows_ in per_lead.items()
    }


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
