"""Celery tasks of tracking: the nightly rollup and retention, fanned out per tenant."""

from __future__ import annotations

from celery import shared_task

from churnapp.models import Tenant
from tracking.services.rollups import tracking_daily_maintain


@shared_task(name="tracking.daily", queue="default")
def tracking_daily() -> int:
    """Beat entry point: one maintenance task per active tenant."""
    ids = list(Tenant.objects.filter(is_active=True).values_list("id", flat=True))
    for tenant_id in ids:
        tracking_tenant_daily.delay(tenant_id)
    return len(ids)


@shared_task(name="tracking.tenant_daily", queue="default")
def tracking_tenant_daily(tenant_id: int) -> dict:
    return tracking_daily_maintain(tenant_id=tenant_id)
