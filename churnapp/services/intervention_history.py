"""Intervention history as features see it, written by the interventions app above."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.models import InterventionOutcome, Lead, LeadInterventionEvent

EVENT = LeadInterventionEvent._meta.db_table
LEAD = Lead._meta.db_table
KEY_MAX = LeadInterventionEvent._meta.get_field("key").max_length


def _event_check(*, stage: int, outcome: str, at: dt.datetime, key: str) -> None:
    if outcome not in InterventionOutcome.values:
        raise ApplicationError(
            f"unknown outcome {outcome!r}; expected one of {', '.join(InterventionOutcome.values)}"
        )
    if timezone.is_naive(at):
        raise ApplicationError("`at` must carry a time zone")
    if not key or len(key) > KEY_MAX:
        raise ApplicationError(f"`key` is required (at most {KEY_MAX} characters)")
    if int(stage) < 0:
        raise ApplicationError("`stage` must not be negative")


def lead_intervention_records(*, events: list[tuple[int, int, str, dt.datetime, str]]) -> int:
    """`lead_intervention_record` for many (lead_id, stage, outcome, at, key) in one
    statement, in the order given (a chunk's planned interventions). A repeated key is a
    no-op as there; a lead that does not exist records nothing. Returns the rows written."""
    for _lead_id, stage, outcome, at, key in events:
        _event_check(stage=stage, outcome=outcome, at=at, key=key)
    if not events:
        return 0
    lead_ids, stages, outcomes, ats, keys = (list(column) for column in zip(*events, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {EVENT} (tenant_id, lead_id, stage, outcome, occurred_at, key)
            SELECT l.tenant_id, l.id, e.stage, e.outcome, e.at, e.key
            FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[], %s::text[])
                WITH ORDINALITY AS e(lead_id, stage, outcome, at, key, n)
            JOIN {LEAD} l ON l.id = e.lead_id
            ORDER BY e.n
            ON CONFLICT (tenant_id, key) DO NOTHING
            """,
            [lead_ids, [int(s) for s in stages], outcomes, ats, keys],
        )
        return cursor.rowcount


def lead_intervention_record(
    *, lead_id: int, stage: int, outcome: str, at: dt.datetime, key: str
) -> LeadInterventionEvent:
    """Record that an intervention on a lead started or ended with `outcome` at `at`.
    `key` is the caller's idempotency key (e.g. "intervention:42:started"): recording
    the same key twice returns the first row. Features read these rows point in time.

    One statement in the common case: it runs inside the orchestration's transaction on
    the detection path, where every round trip counts. The tenant comes from the lead
    row itself (never from the caller), and a repeated key is a no-op, not an error, so
    the caller's transaction needs no savepoint."""
    _event_check(stage=stage, outcome=outcome, at=at, key=key)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {EVENT} (tenant_id, lead_id, stage, outcome, occurred_at, key)
            SELECT l.tenant_id, l.id, %s, %s, %s, %s FROM {LEAD} l WHERE l.id = %s
            ON CONFLICT (tenant_id, key) DO NOTHING
            RETURNING id, tenant_id
            """,
            [stage, outcome, at, key, lead_id],
        )
        row = cursor.fetchone()
    if row is not None:
        return LeadInterventionEvent(
            id=row[0],
            tenant_id=row[1],
            lead_id=lead_id,
            stage=stage,
            outcome=outcome,
            occurred_at=at,
            key=key,
        )
    # The key was recorded before (or the lead does not exist: Lead.DoesNotExist).
    tenant_id = Lead.objects.values_list("tenant_id", flat=True).get(pk=lead_id)
    return LeadInterventionEvent.objects.get(tenant_id=tenant_id, key=key)
