"""Shared argument parsing for the churn_* commands: tenants and dates."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from churnapp.models import Tenant


def tenant_from_arg(value: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=value).first()
    if tenant is None and value.isdigit():
        tenant = Tenant.objects.filter(pk=int(value)).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug or id {value!r}.")
    return tenant


def instant_from_arg(value: str | None) -> dt.datetime:
    """A DATE (midnight UTC) or an ISO datetime (UTC when it has no offset); now if None."""
    if not value:
        return timezone.now()
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--as-of {value!r} is neither YYYY-MM-DD nor an ISO datetime.")
        parsed = dt.datetime.combine(day, dt.time(0, 0))
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt.UTC)
    if parsed > timezone.now():
        raise CommandError("--as-of is in the future.")
    return parsed
