"""Daily rollups (idempotent per day), the intraday refresh of the running day, and the
retention purge of raw lifecycle events."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.utils import timezone

from tracking.models import (
    EscalationDailyRollup,
    InterventionDailyBreakdown,
    InterventionDailyRollup,
    MessageDailyRollup,
    RollupDay,
    TrackingEvent,
    TrackingSettings,
)
from tracking.rollup_sql import (
    BREAKDOWN_COLUMNS,
    ESCALATION_COUNTS,
    ESCALATION_HISTOGRAMS,
    INTERVENTION_COUNTS,
    INTERVENTION_DIMENSIONS,
    INTERVENTION_HISTOGRAMS,
    MESSAGE_COUNTS,
    MESSAGE_DIMENSIONS,
    MESSAGE_HISTOGRAMS,
    breakdown_select,
    day_bounds,
    escalation_rollup_select,
    intervention_rollup_select,
    message_costs,
    message_rollup_select,
)

# First key of the rollup's advisory lock (the second is the tenant id).
ROLLUP_LOCK = 7_406_001


def _insert_select(model, columns: tuple[str, ...], select_sql: str, params: dict) -> int:
    table = model._meta.db_table
    cols = ", ".join(columns)
    sql = f"INSERT INTO {table} (tenant_id, {cols}) SELECT %(tenant)s, {cols} FROM ({select_sql}) r"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _lock(tenant_id: int) -> None:
    # One rollup of a tenant at a time: two overlapping runs would both insert.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ROLLUP_LOCK, tenant_id])


def _mark(
    *, tenant_id: int, days: list[dt.date], rolled_at: dt.datetime, through: dt.datetime | None
) -> None:
    """Record how far the days' rollup rows reach (through None: the whole day)."""
    RollupDay.objects.bulk_create(
        [RollupDay(tenant_id=tenant_id, day=d, rolled_at=rolled_at, through=through) for d in days],
        update_conflicts=True,
        unique_fields=["tenant", "day"],
        update_fields=["rolled_at", "through"],
    )


def _replace_rows(
    *, tenant_id: int, first_day: dt.date, last_day: dt.date, end: dt.datetime
) -> dict[str, int]:
    """Replace the rollup rows of [first_day, last_day] with aggregates of the facts
    timed in [first_day 00:00, end)."""
    start = day_bounds(first_day, last_day)[0]
    params = {"tenant": tenant_id, "start": start, "end": end}
    days = {"tenant_id": tenant_id, "day__gte": first_day, "day__lte": last_day}
    for model in (
        InterventionDailyRollup,
        InterventionDailyBreakdown,
        MessageDailyRollup,
        EscalationDailyRollup,
    ):
        model.objects.filter(**days).delete()
    counts = {
        "interventions": _insert_select(
            InterventionDailyRollup,
            ("day", *INTERVENTION_DIMENSIONS, *INTERVENTION_COUNTS, *INTERVENTION_HISTOGRAMS),
            intervention_rollup_select(),
            params,
        )
    }
    table = InterventionDailyRollup._meta.db_table
    counts["breakdowns"] = _insert_select(
        InterventionDailyBreakdown,
        ("day", *BREAKDOWN_COLUMNS, *INTERVENTION_COUNTS, *INTERVENTION_HISTOGRAMS),
        breakdown_select(
            f"SELECT * FROM {table} WHERE tenant_id = %(tenant)s "
            "AND day >= %(first_day)s AND day <= %(last_day)s"
        ),
        {**params, "first_day": first_day, "last_day": last_day},
    )
    message_sql, cost_params = message_rollup_select(message_costs())
    counts["messages"] = _insert_select(
        MessageDailyRollup,
        ("day", *MESSAGE_DIMENSIONS, *MESSAGE_COUNTS, *MESSAGE_HISTOGRAMS),
        message_sql,
        {**params, **cost_params},
    )
    counts["escalations"] = _insert_select(
        EscalationDailyRollup,
        ("day", *ESCALATION_COUNTS, *ESCALATION_HISTOGRAMS),
        escalation_rollup_select(),
        params,
    )
    return counts


@transaction.atomic
def rollup_days(*, tenant_id: int, first_day: dt.date, last_day: dt.date) -> dict[str, int]:
    """Replace the rollup rows of [first_day, last_day] (UTC days) with fresh aggregates
    of the source tables, and mark those days complete. Re-running a day gives the same
    rows, so the nightly job restates recent days to catch late outcomes and receipts."""
    if last_day < first_day:
        raise ValueError("last_day is before first_day")
    _lock(tenant_id)
    counts = _replace_rows(
        tenant_id=tenant_id,
        first_day=first_day,
        last_day=last_day,
        end=day_bounds(first_day, last_day)[1],
    )
    days = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    _mark(tenant_id=tenant_id, days=days, rolled_at=timezone.now(), through=None)
    return counts


@transaction.atomic
def rollup_today(*, tenant_id: int, now: dt.datetime | None = None) -> dict[str, int]:
    """The intraday refresh: roll up the running UTC day's facts timed before
    now - TRACKING_TODAY_ROLLUP_LAG_SECONDS and record that instant as the day's
    `through`, so a report reads the live tables only from there on.

    Without it a report computes the whole running day from the live tables: at
    1,000,000 interventions a year that was most of a 30-day report's time (232 ms;
    34 ms with the refresh, docs/benchmarks/results.md).

    Each refresh recomputes the day from midnight, so facts that changed since the last
    one (a receipt, an outcome) are restated; the lag leaves time for transactions
    still open at the watermark to commit. A day the nightly job has completed is left
    alone. Returns the row counts, or {} when there was nothing to do."""
    now = now or timezone.now()
    through = now - dt.timedelta(seconds=settings.TRACKING_TODAY_ROLLUP_LAG_SECONDS)
    day = through.astimezone(dt.UTC).date()
    if through <= day_bounds(day, day)[0]:
        return {}
    _lock(tenant_id)
    # The primary, where the nightly job writes: a replica may not have its mark yet.
    marks = RollupDay.objects.using(DEFAULT_DB_ALIAS)
    if marks.filter(tenant_id=tenant_id, day=day, through__isnull=True).exists():
        return {}
    counts = _replace_rows(tenant_id=tenant_id, first_day=day, last_day=day, end=through)
    _mark(tenant_id=tenant_id, days=[day], rolled_at=now, through=through)
    return counts


def retention_days_for(*, tenant_id: int) -> int:
    row = TrackingSettings.objects.filter(tenant_id=tenant_id).first()
    return row.retention_days if row else settings.TRACKING_RETENTION_DAYS


def tracking_events_purge(*, tenant_id: int, now: dt.datetime | None = None) -> int:
    """Delete the tenant's raw lifecycle events older than its retention period, in
    batches (short transactions, no long lock on the log). Rollups are kept."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=retention_days_for(tenant_id=tenant_id))
    deleted = 0
    while True:
        ids = list(
            TrackingEvent.objects.filter(tenant_id=tenant_id, occurred_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:5000]
        )
        if not ids:
            return deleted
        deleted += TrackingEvent.objects.filter(id__in=ids).delete()[0]


def tracking_daily_maintain(*, tenant_id: int, today: dt.date | None = None) -> dict[str, int]:
    """The nightly job of one tenant: roll up yesterday and restate the days before it
    (late outcomes and receipts), then purge raw events past retention."""
    today = today or timezone.now().date()
    yesterday = today - dt.timedelta(days=1)
    first = yesterday - dt.timedelta(days=settings.TRACKING_ROLLUP_RESTATE_DAYS)
    counts = rollup_days(tenant_id=tenant_id, first_day=first, last_day=yesterday)
    counts["purged_events"] = tracking_events_purge(tenant_id=tenant_id)
    return counts
