"""SQL that aggregates interventions, messages and escalations into daily rollup rows.

The same SELECTs fill the rollup tables (nightly) and answer analytics for days not
rolled up yet (today), so both paths count exactly alike."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from django.conf import settings

from churnapp.models import Lead
from interventions.models import Escalation, Intervention, InterventionStep, MessageVariant
from notifications.models import Message
from tracking.stats import BUCKETS, LATENCY_EDGES_SECONDS

# Price bands of a lead's budget: (key, upper bound exclusive); None closes the list.
PRICE_BANDS: tuple[tuple[str, int | None], ...] = (
    ("under_250k", 250_000),
    ("250k_500k", 500_000),
    ("500k_1m", 1_000_000),
    ("1m_plus", None),
)

INTERVENTION_DIMENSIONS = (
    "stage",
    "channel",
    "variant",
    "source",
    "price_band",
    "pipeline_stage",
    "tier_at_start",
    "is_holdout",
)
INTERVENTION_COUNTS = (
    "started",
    "resolved",
    "successes",
    "re_engaged",
    "converted",
    "churned",
    "no_response",
    "unsubscribed",
    "cancelled",
    "episodes_ended",
    "episodes_saved",
)
INTERVENTION_HISTOGRAMS = ("first_send_hist", "resolution_hist")
BREAKDOWN_COLUMNS = ("dimension", "stage", "value", "is_holdout")
MESSAGE_DIMENSIONS = ("channel", "provider", "stage", "variant")
MESSAGE_COUNTS = (
    "created",
    "sent",
    "delivered",
    "opened_or_clicked",
    "replied",
    "failed",
    "suppressed",
    "cost",
    "cost_reported",
    "cost_estimated",
)
MESSAGE_HISTOGRAMS = ("delivery_hist",)
ESCALATION_COUNTS = ("opened", "acknowledged", "resolved", "breached")
ESCALATION_HISTOGRAMS = ("acknowledge_hist", "resolve_hist")

_EDGES = "ARRAY[" + ",".join(str(e) for e in LATENCY_EDGES_SECONDS) + "]::float8[]"


def price_band_sql(column: str) -> str:
    parts = [f"WHEN {column} IS NULL THEN 'unknown'"]
    for key, upper in PRICE_BANDS:
        parts.append(f"WHEN {column} < {upper} THEN '{key}'" if upper else f"ELSE '{key}'")
    return "CASE " + " ".join(parts) + " END"


def price_band_of(budget: Decimal | None) -> str:
    if budget is None:
        return "unknown"
    for key, upper in PRICE_BANDS:
        if upper is None or budget < upper:
            return key
    return PRICE_BANDS[-1][0]


def _bucket(seconds_sql: str) -> str:
    return f"width_bucket({seconds_sql}, {_EDGES})"


def hist_from_buckets(bucket_column: str) -> str:
    """An aggregate building a histogram array from a per-row bucket index (NULL = none)."""
    cells = ", ".join(f"count(*) FILTER (WHERE {bucket_column} = {b})" for b in range(BUCKETS))
    return f"ARRAY[{cells}]::int[]"


def hist_sum(column: str, where: str = "") -> str:
    """An aggregate adding histogram arrays element-wise (empty arrays count as zeros),
    over the rows matching `where` when given."""
    only = f" FILTER (WHERE {where})" if where else ""
    cells = ", ".join(f"COALESCE(sum({column}[{b + 1}]){only}, 0)" for b in range(BUCKETS))
    return f"ARRAY[{cells}]::bigint[]"


def _epoch(later: str, earlier: str) -> str:
    return f"GREATEST(EXTRACT(EPOCH FROM ({later} - {earlier})), 0)::float8"


def intervention_rollup_select() -> str:
    """Rows (day, dimensions, counts, histograms) for params tenant, start, end (aware)."""
    iv = Intervention._meta.db_table
    lead = Lead._meta.db_table
    step = InterventionStep._meta.db_table
    variant = MessageVariant._meta.db_table
    message = Message._meta.db_table
    success = "('re_engaged', 'converted')"
    return f"""
    WITH iv AS (
        SELECT i.id, i.stage, i.is_holdout, i.outcome, i.planned_at, i.resolved_at,
               i.detected_at, i.lead_id, i.episode,
               COALESCE(v.key, '') AS variant,
               l.source, {price_band_sql("l.budget")} AS price_band, l.pipeline_stage,
               i.tier_at_start,
               COALESCE((SELECT s.channel FROM {step} s
                         WHERE s.intervention_id = i.id AND s.status = 'requested'
                         ORDER BY s.position LIMIT 1), '') AS channel
        FROM {iv} i
        -- LIMIT 1 keeps these per-row index lookups: a day has few interventions, and
        -- a hash join would read every lead of the tenant.
        CROSS JOIN LATERAL (SELECT source, budget, pipeline_stage FROM {lead}
                            WHERE id = i.lead_id LIMIT 1) l
        LEFT JOIN LATERAL (SELECT key FROM {variant} WHERE id = i.variant_id LIMIT 1) v
            ON true
        WHERE i.tenant_id = %(tenant)s
          AND ((i.planned_at >= %(start)s AND i.planned_at < %(end)s)
               OR (i.resolved_at >= %(start)s AND i.resolved_at < %(end)s))
    ), facts AS (
        SELECT (iv.planned_at AT TIME ZONE 'UTC')::date AS day,
               iv.stage, iv.channel, iv.variant, iv.source, iv.price_band, iv.pipeline_stage,
               iv.tier_at_start, iv.is_holdout,
               1 AS started, 0 AS resolved, NULL::text AS outcome, 0 AS ended,
               {
        _bucket(
            _epoch(
                f"(SELECT min(m.sent_at) FROM {step} s JOIN {message} m ON m.id = s.message_id "
                "WHERE s.intervention_id = iv.id)",
                "iv.detected_at",
            )
        )
    } AS first_send_bucket,
               NULL::int AS resolution_bucket
        FROM iv WHERE iv.planned_at >= %(start)s AND iv.planned_at < %(end)s
        UNION ALL
        SELECT (iv.resolved_at AT TIME ZONE 'UTC')::date,
               iv.stage, iv.channel, iv.variant, iv.source, iv.price_band, iv.pipeline_stage,
               iv.tier_at_start, iv.is_holdout,
               0, 1, iv.outcome,
               CASE WHEN iv.outcome <> 'cancelled' AND NOT EXISTS (
                   SELECT 1 FROM {iv} n WHERE n.lead_id = iv.lead_id
                   AND n.episode = iv.episode AND n.stage > iv.stage) THEN 1 ELSE 0 END,
               NULL::int,
               {_bucket(_epoch("iv.resolved_at", "iv.planned_at"))}
        FROM iv WHERE iv.resolved_at >= %(start)s AND iv.resolved_at < %(end)s
    )
    SELECT day, stage, channel, variant, source, price_band, pipeline_stage, tier_at_start,
           is_holdout,
           sum(started)::int AS started,
           sum(resolved)::int AS resolved,
           count(*) FILTER (WHERE outcome IN {success})::int AS successes,
           count(*) FILTER (WHERE outcome = 're_engaged')::int AS re_engaged,
           count(*) FILTER (WHERE outcome = 'converted')::int AS converted,
           count(*) FILTER (WHERE outcome = 'churned')::int AS churned,
           count(*) FILTER (WHERE outcome = 'no_response')::int AS no_response,
           count(*) FILTER (WHERE outcome = 'unsubscribed')::int AS unsubscribed,
           count(*) FILTER (WHERE outcome = 'cancelled')::int AS cancelled,
           sum(ended)::int AS episodes_ended,
           count(*) FILTER (WHERE ended = 1 AND outcome IN {success})::int AS episodes_saved,
           {hist_from_buckets("first_send_bucket")} AS first_send_hist,
           {hist_from_buckets("resolution_bucket")} AS resolution_hist
    FROM facts
    GROUP BY day, stage, channel, variant, source, price_band, pipeline_stage, tier_at_start,
             is_holdout
    """


# The breakdowns analytics read, each with the arm: name -> grouped dimensions.
BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "overall": (),
    "stage": ("stage",),
    "channel": ("channel",),
    "variant": ("stage", "variant"),
    "source": ("source",),
    "price_band": ("price_band",),
    "pipeline_stage": ("pipeline_stage",),
    "tier_at_start": ("tier_at_start",),
    "stage_channel": ("stage", "channel"),
}
_GROUPED = (
    "stage",
    "channel",
    "variant",
    "source",
    "price_band",
    "pipeline_stage",
    "tier_at_start",
)


def breakdown_select(source_sql: str) -> str:
    """Breakdown rows (day, dimension, stage, value, is_holdout, counts, histograms) from
    a SELECT of cross-product rows (the rollup table's rows or the live aggregate)."""
    width = len(_GROUPED)

    def mask(dims: tuple[str, ...]) -> int:
        # GROUPING(a, b, ...) sets the bit of every column NOT grouped, first = highest.
        return sum(1 << (width - 1 - i) for i, d in enumerate(_GROUPED) if d not in dims)

    grouping = f"GROUPING({', '.join(_GROUPED)})"
    dimension = " ".join(f"WHEN {mask(d)} THEN '{name}'" for name, d in BREAKDOWNS.items())
    value_cases = []
    for dims in BREAKDOWNS.values():
        rest = [d for d in dims if d != "stage"]
        if rest:
            value_cases.append(f"WHEN {mask(dims)} THEN {rest[0]}")
    sets = ", ".join(
        "(" + ", ".join(("day", "is_holdout", *dims)) + ")" for dims in BREAKDOWNS.values()
    )
    sums = ", ".join(f"sum({c})::int AS {c}" for c in INTERVENTION_COUNTS)
    # Latencies are reported overall only: other breakdowns keep empty histograms.
    overall = mask(BREAKDOWNS["overall"])
    hists = ", ".join(
        f"CASE WHEN {grouping} = {overall} THEN {hist_sum(h)}::int[] ELSE '{{}}'::int[] END AS {h}"
        for h in INTERVENTION_HISTOGRAMS
    )
    return f"""
    SELECT day, CASE {grouping} {dimension} END AS dimension,
           CASE WHEN GROUPING(stage) = 0 THEN stage END AS stage,
           COALESCE(CASE {grouping} {" ".join(value_cases)} END, '') AS value,
           is_holdout, {sums}, {hists}
    FROM ({source_sql}) cross_product
    GROUP BY GROUPING SETS ({sets})
    """


def message_costs() -> list[tuple[str, str, Decimal]]:
    """(channel, provider, unit cost) from TRACKING_MESSAGE_COSTS; provider '' is the
    channel's default."""
    table = settings.TRACKING_MESSAGE_COSTS
    if isinstance(table, str):
        table = json.loads(table)
    rows = []
    for channel, value in table.items():
        if isinstance(value, dict):
            for provider, unit in value.items():
                rows.append((channel, "" if provider == "default" else provider, Decimal(unit)))
        else:
            rows.append((channel, "", Decimal(str(value))))
    return rows


def message_rollup_select(costs: list[tuple[str, str, Decimal]]) -> tuple[str, dict]:
    message = Message._meta.db_table
    iv = Intervention._meta.db_table
    params: dict = {}
    values = []
    for index, (channel, provider, unit) in enumerate(costs):
        params[f"c{index}"], params[f"p{index}"], params[f"u{index}"] = channel, provider, unit
        values.append(f"(%(c{index})s, %(p{index})s, %(u{index})s::numeric)")
    values_sql = ", ".join(values) or "(NULL, NULL, NULL::numeric)"
    # msg is MATERIALIZED so each message's delivery bucket is computed once: inlined,
    # PostgreSQL put the bucket expression into every one of the histogram's FILTERs
    # (BUCKETS evaluations of width_bucket per message; a report's live part for a day
    # of 7,390 messages took 100 ms, 55-68 ms this way). Only the columns read are kept.
    sql = f"""
    WITH costs(channel, provider, unit) AS (VALUES {values_sql}),
    msg AS MATERIALIZED (
        SELECT m.created_at, m.channel, m.provider, m.variant, m.sent_at, m.delivered_at,
               m.opened_at, m.clicked_at, m.replied_at, m.status, m.cost,
               CASE WHEN m.delivered_at IS NOT NULL AND m.sent_at IS NOT NULL
                    THEN {_bucket(_epoch("m.delivered_at", "m.sent_at"))} END AS delivery_bucket,
               COALESCE(i.stage, 0) AS iv_stage,
               COALESCE((SELECT c.unit FROM costs c WHERE c.channel = m.channel
                         AND c.provider = m.provider),
                        (SELECT c.unit FROM costs c WHERE c.channel = m.channel
                         AND c.provider = ''), 0) AS unit_cost
        FROM {message} m
        LEFT JOIN {iv} i ON i.id = CASE WHEN jsonb_typeof(m.metadata -> 'intervention_id')
                                      = 'number' THEN (m.metadata ->> 'intervention_id')::bigint
                                      END
        WHERE m.tenant_id = %(tenant)s AND m.created_at >= %(start)s AND m.created_at < %(end)s
    )
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, channel, provider,
           iv_stage AS stage, variant,
           count(*)::int AS created,
           count(sent_at)::int AS sent,
           count(delivered_at)::int AS delivered,
           count(*) FILTER (WHERE opened_at IS NOT NULL OR clicked_at IS NOT NULL)::int
               AS opened_or_clicked,
           count(replied_at)::int AS replied,
           count(*) FILTER (WHERE status IN ('failed', 'bounced', 'dead'))::int AS failed,
           count(*) FILTER (WHERE status = 'suppressed')::int AS suppressed,
           COALESCE(sum(COALESCE(cost, unit_cost)) FILTER (WHERE sent_at IS NOT NULL), 0)
               AS cost,
           count(*) FILTER (WHERE sent_at IS NOT NULL AND cost IS NOT NULL)::int
               AS cost_reported,
           count(*) FILTER (WHERE sent_at IS NOT NULL AND cost IS NULL)::int AS cost_estimated,
           {hist_from_buckets("delivery_bucket")} AS delivery_hist
    FROM msg
    GROUP BY 1, channel, provider, iv_stage, variant
    """
    return sql, params


def escalation_rollup_select() -> str:
    esc = Escalation._meta.db_table
    return f"""
    WITH esc AS (
        SELECT * FROM {esc} e WHERE e.tenant_id = %(tenant)s AND (
            (e.opened_at >= %(start)s AND e.opened_at < %(end)s)
            OR (e.acknowledged_at >= %(start)s AND e.acknowledged_at < %(end)s)
            OR (e.resolved_at >= %(start)s AND e.resolved_at < %(end)s)
            OR (e.breached_at >= %(start)s AND e.breached_at < %(end)s))
    ), facts AS (
        SELECT (opened_at AT TIME ZONE 'UTC')::date AS day, 'opened' AS what, NULL::int AS b
        FROM esc WHERE opened_at >= %(start)s AND opened_at < %(end)s
        UNION ALL
        SELECT (acknowledged_at AT TIME ZONE 'UTC')::date, 'acknowledged',
               {_bucket(_epoch("acknowledged_at", "opened_at"))}
        FROM esc WHERE acknowledged_at >= %(start)s AND acknowledged_at < %(end)s
        UNION ALL
        SELECT (resolved_at AT TIME ZONE 'UTC')::date, 'resolved',
               {_bucket(_epoch("resolved_at", "opened_at"))}
        FROM esc WHERE resolved_at >= %(start)s AND resolved_at < %(end)s
        UNION ALL
        SELECT (breached_at AT TIME ZONE 'UTC')::date, 'breached', NULL
        FROM esc WHERE breached_at >= %(start)s AND breached_at < %(end)s
    )
    SELECT day,
           count(*) FILTER (WHERE what = 'opened')::int AS opened,
           count(*) FILTER (WHERE what = 'acknowledged')::int AS acknowledged,
           count(*) FILTER (WHERE what = 'resolved')::int AS resolved,
           count(*) FILTER (WHERE what = 'breached')::int AS breached,
           {hist_from_buckets("CASE WHEN what = 'acknowledged' THEN b END")} AS acknowledge_hist,
           {hist_from_buckets("CASE WHEN what = 'resolved' THEN b END")} AS resolve_hist
    FROM facts GROUP BY day
    """


def day_bounds(first_day: dt.date, last_day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Aware UTC bounds [first_day 00:00, last_day + 1 00:00)."""
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=dt.UTC)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    return start, end
