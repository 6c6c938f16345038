"""Activity ingest: validate a batch, store it once (deduplicated on the source event
id), move the leads' activity clocks, and tell the apps above in the same transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone
from psycopg2.extras import Json, execute_values

from churnapp.exceptions import ApplicationError
from churnapp.models import (
    KIND_CHANNEL,
    KIND_DIRECTION,
    ActivityKind,
    Direction,
    Lead,
    LeadActivity,
    LeadStatus,
    Tenant,
)
from churnapp.signals import activity_ingested

MAX_BATCH = 1000
# Clocks drift; an event stamped a little ahead of ours is real, one far ahead is a bug.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class ActivityInput:
    lead_external_id: str
    kind: str
    occurred_at: dt.datetime
    source_event_id: str
    direction: str | None = None
    channel: str | None = None
    value: float | None = None
    payload: dict = field(default_factory=dict)


@dataclass
class IngestResult:
    statuses: list[str]  # per input item, in order: "created" or "duplicate"
    created_ids: list[int]

    @property
    def created(self) -> int:
        return self.statuses.count("created")

    @property
    def duplicates(self) -> int:
        return self.statuses.count("duplicate")


def _validate(item: ActivityInput, now: dt.datetime) -> str | None:
    if item.kind not in ActivityKind.values:
        return f"unknown kind {item.kind!r}; expected one of {', '.join(ActivityKind.values)}"
    if not item.source_event_id or len(item.source_event_id) > 200:
        return "source_event_id is required (at most 200 characters)"
    if not item.lead_external_id:
        return "lead_external_id is required"
    if timezone.is_naive(item.occurred_at):
        return "occurred_at must carry a time zone"
    if item.occurred_at > now + FUTURE_TOLERANCE:
        return "occurred_at is in the future"
    expected = KIND_DIRECTION[item.kind]
    if item.direction and item.direction != expected:
        return f"direction {item.direction!r} contradicts kind {item.kind!r} ({expected})"
    return None


def activities_ingest(*, tenant: Tenant, items: Sequence[ActivityInput]) -> IngestResult:
    """Store a batch of activities all or nothing.

    Every item is validated first; if any is invalid, ApplicationError lists the bad
    items by index and nothing is written. Items whose source event id is already
    stored (or repeated within the batch) are reported as duplicates, not errors, so a
    CRM can safely resend a batch.
    """
    if len(items) > MAX_BATCH:
        raise ApplicationError(
            f"At most {MAX_BATCH} activities per request.", code="batch_too_large"
        )
    now = timezone.now()
    errors: dict[str, str] = {}
    for index, item in enumerate(items):
        problem = _validate(item, now)
        if problem:
            errors[str(index)] = problem

    external_ids = {item.lead_external_id for item in items}
    leads = dict(
        Lead.objects.filter(tenant=tenant, external_id__in=external_ids).values_list(
            "external_id", "id"
        )
    )
    for index, item in enumerate(items):
        if str(index) not in errors and item.lead_external_id not in leads:
            errors[str(index)] = f"unknown lead {item.lead_external_id!r}; upsert it first"
    if errors:
        raise ApplicationError(
            f"{len(errors)} of {len(items)} activities are invalid; nothing was stored.",
            details={"items": errors},
        )
    return _insert(tenant=tenant, items=items, lead_ids=leads, now=now)


@transaction.atomic
def _insert(
    *, tenant: Tenant, items: Sequence[ActivityInput], lead_ids: dict[str, int], now: dt.datetime
) -> IngestResult:
    rows, seen = [], set()
    for item in items:
        if item.source_event_id in seen:
            continue
        seen.add(item.source_event_id)
        rows.append(
            (
                tenant.id,
                lead_ids[item.lead_external_id],
                item.kind,
                item.direction or KIND_DIRECTION[item.kind],
                item.channel or KIND_CHANNEL[item.kind],
                item.occurred_at,
                item.source_event_id,
                item.value,
                Json(item.payload or {}),
                now,
            )
        )
    table = LeadActivity._meta.db_table
    with connection.cursor() as cursor:
        inserted = execute_values(
            cursor.cursor,  # the raw psycopg2 cursor, for execute_values
            f"""
            INSERT INTO {table} (tenant_id, lead_id, kind, direction, channel, occurred_at,
                                 source_event_id, value, payload, created_at)
            VALUES %s
            ON CONFLICT (tenant_id, source_event_id) DO NOTHING
            RETURNING id, source_event_id, lead_id, kind, direction, occurred_at
            """,
            rows,
            page_size=MAX_BATCH,
            fetch=True,
        )
    created_events = {row[1] for row in inserted}
    statuses, claimed = [], set()
    for item in items:
        fresh = item.source_event_id in created_events and item.source_event_id not in claimed
        claimed.add(item.source_event_id)
        statuses.append("created" if fresh else "duplicate")
    if inserted:
        _lead_clocks_move(inserted)
        activity_ingested.send(
            sender=LeadActivity,
            tenant_id=tenant.id,
            lead_ids=sorted({row[2] for row in inserted}),
            activity_ids=[row[0] for row in inserted],
            inbound_lead_ids=sorted({row[2] for row in inserted if row[4] == Direction.INBOUND}),
        )
    return IngestResult(statuses=statuses, created_ids=[row[0] for row in inserted])


def _lead_clocks_move(inserted: list[tuple]) -> None:
    """Advance last_activity_at / last_inbound_at and apply won/lost, one UPDATE per batch."""
    per_lead: dict[int, list] = {}
    for _id, _event, lead_id, kind, direction, occurred_at in inserted:
        last_any, last_in, status = per_lead.get(lead_id, [None, None, None])
        last_any = max(filter(None, [last_any, occurred_at]))
        if direction == Direction.INBOUND:
            last_in = max(filter(None, [last_in, occurred_at]))
        if kind == ActivityKind.OPPORTUNITY_WON:
            status = LeadStatus.CONVERTED
        elif kind == ActivityKind.OPPORTUNITY_LOST and status != LeadStatus.CONVERTED:
            status = LeadStatus.LOST
        per_lead[lead_id] = [last_any, last_in, status]
    table = Lead._meta.db_table
    with connection.cursor() as cursor:
        execute_values(
            cursor.cursor,  # the raw psycopg2 cursor, for execute_values
            f"""
            UPDATE {table} AS l SET
                last_activity_at = GREATEST(l.last_activity_at, v.last_any),
                last_inbound_at = GREATEST(l.last_inbound_at, v.last_in),
                status = COALESCE(v.status, l.status)
            FROM (VALUES %s) AS v (id, last_any, last_in, status)
            WHERE l.id = v.id
            """,
            [(lead_id, *values) for lead_id, values in per_lead.items()],
            template="(%s, %s::timestamptz, %s::timestamptz, %s::varchar)",
        )


def activity_record(
    *,
    tenant: Tenant,
    lead: Lead,
    kind: str,
    occurred_at: dt.datetime,
    source_event_id: str,
    value: float | None = None,
    payload: dict | None = None,
) -> bool:
    """Record one activity of a known lead (webhooks, replies). True if it was new."""
    result = activities_ingest(
        tenant=tenant,
        items=[
            ActivityInput(
                lead_external_id=lead.external_id,
                kind=kind,
                occurred_at=occurred_at,
                source_event_id=source_event_id,
                value=value,
                payload=payload or {},
            )
        ],
    )
    return result.created == 1
