"""Tenant onboarding: create a brokerage with a valid IANA time zone."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from churnapp.exceptions import ApplicationError, ConflictError
from churnapp.models import Tenant
from churnapp.normalize import timezone_check


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    name: str,
    timezone: str = "America/New_York",
    ghl_location_id: str = "",
    currency: str = "USD",
    saved_lead_value: Decimal | None = None,
) -> Tenant:
    """Create a tenant. ApplicationError on an invalid field, ConflictError on a taken
    slug or GHL location id."""
    try:
        timezone = timezone_check(timezone)
    except ValueError as exc:
        raise ApplicationError(str(exc), details={"timezone": str(exc)})
    if not timezone:
        raise ApplicationError("timezone is required", details={"timezone": "required"})
    if Tenant.objects.filter(slug=slug).exists():
        raise ConflictError(f"A tenant with slug {slug!r} already exists.", details={"slug": slug})
    if ghl_location_id and Tenant.objects.filter(ghl_location_id=ghl_location_id).exists():
        raise ConflictError(
            f"GHL location {ghl_location_id!r} already belongs to another tenant.",
            details={"ghl_location_id": ghl_location_id},
        )
    tenant = Tenant(
        slug=slug,
        name=name,
        timezone=timezone,
        ghl_location_id=ghl_location_id,
        currency=currency,
    )
    if saved_lead_value is not None:
        tenant.saved_lead_value = saved_lead_value
    tenant.full_clean()
    tenant.save()
    return tenant
