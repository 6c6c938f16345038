"""Activity ingest: validate a batch, store it once (deduplicated on the source event
id), move the leads' activity clocks, and tell the apps above in the same transaction."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import isfinite

from django.db import connection, transaction
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.hints import hint_params, hint_query
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
from churnapp.prepared import execute_prepared
from churnapp.signals import activity_ingested

MAX_BATCH = 1000
# Batches up to this many activities insert through prepared statements (see _insert).
PREPARED_BATCH_MAX = 20
# Clocks drift; an event stamped a little ahead of ours is real, one far ahead is a bug.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
# ActivityKind.values builds a new list on every access: once per item adds up.
_KINDS = frozenset(ActivityKind.values)
_NO_PAYLOAD: dict = {}


# slots, not frozen: the bulk API builds a thousand per request, and a frozen
# dataclass's __init__ sets each field through object.__setattr__ (twice the cost).
@dataclass(slots=True)
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
    if item.kind not in _KINDS:
        return f"unknown kind {item.kind!r}; expected one of {', '.join(ActivityKind.values)}"
    if not item.source_event_id or len(item.source_event_id) > 200:
        return "source_event_id is required (at most 200 characters)"
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
        problem = _validate(item, now) if item.lead_external_id else "lead_external_id is required"
        if problem:
            errors[str(index)] = problem

    external_ids = {item.lead_external_id for item in items}
    # Plain SQL with one array parameter: the ORM's IN (%s, %s, ...) of a thousand ids
    # cost more to compile than the query took to run.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id FROM {Lead._meta.db_table}"
            " WHERE tenant_id = %s AND external_id = ANY(%s::varchar[])",
            [tenant.id, list(external_ids)],
        )
        leads = dict(cursor.fetchall())
    for index, item in enumerate(items):
        if str(index) not in errors and item.lead_external_id not in leads:
            errors[str(index)] = f"unknown lead {item.lead_external_id!r}; upsert it first"
    if errors:
        raise ApplicationError(
            f"{len(errors)} of {len(items)} activities are invalid; nothing was stored.",
            details={"items": errors},
        )
    return _insert(
        tenant_id=tenant.id,
        items=items,
        lead_pks=[leads[item.lead_external_id] for item in items],
        now=now,
    )


# No savepoint when called inside a transaction (callbacks): nothing here is retried
# on failure, and SAVEPOINT + RELEASE are two more round trips.
@transaction.atomic(savepoint=False)
def _insert(
    *, tenant_id: int, items: Sequence[ActivityInput], lead_pks: Sequence[int], now: dt.datetime
) -> IngestResult:
    """Insert `items` (each of the lead whose id is at the same place in `lead_pks`)."""
    rows: list[tuple] = []
    seen: set[str] = set()
    for item, lead_pk in zip(items, lead_pks, strict=True):
        if item.source_event_id in seen:
            continue
        seen.add(item.source_event_id)
        rows.append(
            (
                lead_pk,
                item.kind,
                item.direction or KIND_DIRECTION[item.kind],
                item.channel or KIND_CHANNEL[item.kind],
                item.occurred_at.isoformat(),
                item.source_event_id,
                item.value if item.value is None or isfinite(item.value) else str(item.value),
                item.payload or _NO_PAYLOAD,
            )
        )
    # The batch goes as one JSON document that PostgreSQL takes apart (jsonb parses
    # once; each ->> is then a lookup). Eight arrays adapted by psycopg2 became an
    # ARRAY[...] expression of 8,000 literals that the client built and the server
    # parsed: under the ingest benchmark that cost about twice the wall time and four
    # times the client CPU of this. Only what the signal and the answer need comes back.
    # A value that JSON cannot carry (NaN, inf: a webhook's monetaryValue may be one) goes
    # as text that float8 reads ("nan", "inf", "-inf"), and is stored as it was before.
    #
    # One round trip does it all, in order: lock the batch's leads in id order (two
    # concurrent batches that share leads otherwise lock them in whatever order each
    # UPDATE's plan visits them, and deadlock: four parallel clients of the bulk API got
    # a 503 this way; scoring's bulk UPDATE locks in id order too), insert, advance each
    # lead's clocks from the rows just inserted (the latest activity and the latest
    # inbound one; won converts the lead, else lost loses it), and hint the rescoring of
    # the leads with new inbound activity (churnapp.hints: a NOTIFY, sent on commit).
    # These were three round trips, a fifth of an email open's time.
    with connection.cursor() as cursor:
        # Prepared statements (churnapp.prepared) for small batches: planning this took
        # twice as long as running it, on every open pixel. A bulk request's thousand
        # rows keep their custom plan (planned for the batch at hand).
        execute_prepared(
            cursor,
            _insert_statements(),
            {
                "leads": _id_array(sorted(set(lead_pks))),
                "tenant": tenant_id,
                "now": now,
                "rows": json.dumps(rows),
                "inbound": Direction.INBOUND.value,
                "won": ActivityKind.OPPORTUNITY_WON.value,
                "lost": ActivityKind.OPPORTUNITY_LOST.value,
                "converted": LeadStatus.CONVERTED.value,
                "lost_status": LeadStatus.LOST.value,
                **hint_params(tenant_id),
            },
            prepare=len(rows) <= PREPARED_BATCH_MAX,
        )
        inserted = cursor.fetchall()
    created_events = {row[1] for row in inserted}
    statuses, claimed = [], set()
    for item in items:
        fresh = item.source_event_id in created_events and item.source_event_id not in claimed
        claimed.add(item.source_event_id)
        statuses.append("created" if fresh else "duplicate")
    if inserted:
        activity_ids = [row[0] for row in inserted]
        lead_ids_moved = sorted({row[2] for row in inserted})
        activity_ingested.send(
            sender=LeadActivity,
            tenant_id=tenant_id,
            lead_ids=lead_ids_moved,
            activity_ids=activity_ids,
            inbound_lead_ids=sorted({row[2] for row in inserted if row[3] == Direction.INBOUND}),
            kinds=frozenset(row[4] for row in inserted),
        )
    return IngestResult(statuses=statuses, created_ids=[row[0] for row in inserted])


@functools.cache
def _insert_statements() -> tuple[tuple[str, str], tuple[str, str]]:
    """_insert's two statements, as (name, SQL) for execute_prepared."""
    table = LeadActivity._meta.db_table
    leads = Lead._meta.db_table
    return (
        (
            "churn_activities_lock",
            f"""
            SELECT 1 FROM {leads} WHERE id = ANY(%(leads)s::bigint[])
             ORDER BY id FOR NO KEY UPDATE
            """,
        ),
        (
            "churn_activities_insert",
            f"""
            WITH ins AS (
                INSERT INTO {table} (tenant_id, lead_id, kind, direction, channel,
                                     occurred_at, source_event_id, value, payload, created_at)
                SELECT %(tenant)s::bigint, (r->>0)::bigint, r->>1, r->>2, r->>3, (r->>4)::timestamptz,
                       r->>5, (r->>6)::float8, r->7, %(now)s::timestamptz
                  FROM jsonb_array_elements(%(rows)s::jsonb) AS r
                ON CONFLICT (tenant_id, source_event_id) DO NOTHING
                RETURNING id, source_event_id, lead_id, direction, kind, occurred_at
            ),
            clocks AS (
                UPDATE {leads} AS l SET
                    last_activity_at = GREATEST(l.last_activity_at, v.last_any),
                    last_inbound_at = GREATEST(l.last_inbound_at, v.last_in),
                    status = COALESCE(v.status, l.status)
                FROM (
                    SELECT lead_id,
                           max(occurred_at) AS last_any,
                           max(occurred_at) FILTER (WHERE direction = %(inbound)s) AS last_in,
                           CASE WHEN bool_or(kind = %(won)s) THEN %(converted)s
                                WHEN bool_or(kind = %(lost)s) THEN %(lost_status)s
                           END AS status
                      FROM ins GROUP BY lead_id
                ) AS v
                -- The batch's ids again, for the planner: it takes the inserted rows for
                -- a hundred (a set-returning function's guess) and would hash-join them
                -- to a scan of every lead.
                WHERE l.id = v.lead_id AND l.id = ANY(%(leads)s::bigint[])
            )
            SELECT id, source_event_id, lead_id, direction, kind,
                   ({hint_query("SELECT lead_id FROM ins WHERE direction = %(inbound)s")})
              FROM ins
            """,
        ),
    )


def _id_array(ids: Sequence[int]) -> str:
    """A bigint[] literal: one parameter, where a list would be adapted (and parsed by
    the server) as an ARRAY[...] of a thousand literals."""
    return "{" + ",".join(map(str, ids)) + "}"


def activity_record(
    *,
    tenant_id: int,
    lead_id: int,
    kind: str,
    occurred_at: dt.datetime,
    source_event_id: str,
    value: float | None = None,
    payload: dict | None = None,
) -> bool:
    """Record one activity of a lead the caller holds (webhooks, replies, engagement
    callbacks). True if it was new; ApplicationError if the activity is invalid.

    By ids: a callback that locked its message by plain SQL has the lead's and tenant's
    ids, and needs neither row to record this."""
    now = timezone.now()
    item = ActivityInput(
        lead_external_id="",
        kind=kind,
        occurred_at=occurred_at,
        source_event_id=source_event_id,
        value=value,
        payload=payload or {},
    )
    if problem := _validate(item, now):
        raise ApplicationError(f"Invalid activity: {problem}", details={"items": {"0": problem}})
    result = _insert(tenant_id=tenant_id, items=[item], lead_pks=[lead_id], now=now)
    return result.created == 1
