"""Reads of churnapp that views, admin and other apps reuse; always scoped to a tenant."""

from __future__ import annotations

from django.db.models import QuerySet

from churnapp.models import Lead, LeadActivity, Tenant


def lead_list(*, tenant: Tenant, include_deleted: bool = False) -> QuerySet[Lead]:
    """The tenant's leads, CRM-deleted ones only on request, oldest first."""
    leads = Lead.objects.filter(tenant=tenant).select_related("assigned_agent")
    if not include_deleted:
        leads = leads.filter(deleted_at__isnull=True)
    return leads.order_by("id")


def lead_get(
    *, tenant: Tenant, lead_id: int | None = None, external_id: str | None = None
) -> Lead | None:
    """One of the tenant's leads by id or external id (deleted ones too), or None."""
    leads = Lead.objects.filter(tenant=tenant).select_related("assigned_agent")
    if lead_id is not None:
        return leads.filter(pk=lead_id).first()
    if external_id is not None:
        return leads.filter(external_id=external_id).first()
    raise TypeError("lead_get needs lead_id or external_id")


def activity_list(*, tenant: Tenant) -> QuerySet[LeadActivity]:
    """The tenant's activities, newest first."""
    return (
        LeadActivity.objects.filter(tenant=tenant)
        .select_related("lead")
        .order_by("-occurred_at", "-id")
    )


def lead_activity_timeline(*, lead: Lead, limit: int = 50) -> list[LeadActivity]:
    """A lead's most recent activities, newest first (the admin timeline)."""
    return list(lead.activities.order_by("-occurred_at", "-id")[:limit])
