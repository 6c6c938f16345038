"""Intervention history as features see it, written by the interventions app above."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.models import InterventionOutcome, Lead, LeadInterventionEvent


@transaction.atomic
def lead_intervention_record(
    *, lead_id: int, stage: int, outcome: str, at: dt.datetime, key: str
) -> LeadInterventionEvent:
    """Record that an intervention on a lead started or ended with `outcome` at `at`.
    `key` is the caller's idempotency key (e.g. "intervention:42:started"): recording
    the same key twice returns the first row. Features read these rows point in time."""
    if outcome not in InterventionOutcome.values:
        raise ApplicationError(
            f"unknown outcome {outcome!r}; expected one of {', '.join(InterventionOutcome.values)}"
        )
    if timezone.is_naive(at):
        raise ApplicationError("`at` must carry a time zone")
    tenant_id = Lead.objects.values_list("tenant_id", flat=True).get(pk=lead_id)
    existing = LeadInterventionEvent.objects.filter(tenant_id=tenant_id, key=key).first()
    if existing is not None:
        return existing
    event = LeadInterventionEvent(
        tenant_id=tenant_id, lead_id=lead_id, stage=stage, outcome=outcome, occurred_at=at, key=key
    )
    event.full_clean()
    try:
        with transaction.atomic():
            event.save()
    except IntegrityError:  # a concurrent call with the same key won
        return LeadInterventionEvent.objects.get(tenant_id=tenant_id, key=key)
    return event
