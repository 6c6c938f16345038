"""Celery tasks of tracking: the nightly rollup and retention, and the intraday refresh of
the running day, each fanned out per tenant."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from churnapp.models import Tenant
from tracking.services.rollups import rollup_today, tracking_daily_maintain


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


@shared_task(name="tracking.today", queue="default")
def tracking_today() -> int:
    """Beat entry point of the intraday refresh: one task per active tenant (none when
    TRACKING_TODAY_ROLLUP_SECONDS is 0; beat's database may still hold the entry)."""
    if settings.TRACKING_TODAY_ROLLUP_SECONDS <= 0:
        return 0
    ids = list(Tenant.objects.filter(is_active=True).values_list("id", flat=True))
    for tenant_id in ids:
        # A refresh still queued when the next is due is dropped: the next one covers it.
        tracking_tenant_today.apply_async(
            (tenant_id,), expires=settings.TRACKING_TODAY_ROLLUP_SECONDS
        )
    return len(ids)


@shared_task(name="tracking.tenant_today", queue="default")
def tracking_tenant_today(tenant_id: int) -> dict:
    return rollup_today(tenant_id=tenant_id)
