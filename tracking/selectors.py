"""Reads of tracking: events, timelines, success analytics and business impact."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Min, QuerySet
from django.utils import timezone

from churnapp.models import ActivityKind, LeadActivity, Tenant
from config.db_router import analytics_db
from interventions.models import (
    OPEN_STATUSES,
    Escalation,
    EscalationStatus,
    Intervention,
    InterventionPolicy,
    InterventionStatus,
)
from tracking import stats
from tracking.models import (
    EscalationDailyRollup,
    InterventionDailyBreakdown,
    MessageDailyRollup,
    RollupDay,
    TrackingEvent,
)
from tracking.rollup_sql import (
    BREAKDOWN_COLUMNS,
    BREAKDOWNS,
    ESCALATION_COUNTS,
    ESCALATION_HISTOGRAMS,
    INTERVENTION_COUNTS,
    INTERVENTION_HISTOGRAMS,
    MESSAGE_COUNTS,
    MESSAGE_DIMENSIONS,
    MESSAGE_HISTOGRAMS,
    breakdown_select,
    day_bounds,
    escalation_rollup_select,
    hist_sum,
    intervention_rollup_select,
    message_costs,
    message_rollup_select,
)

SUCCESS_DEFINITION = (
    "Success: an intervention resolved as re_engaged (the lead replied or acted in the "
    "response window) or converted (appointment, showing or won opportunity). A success "
    "rate is successes / resolved interventions, cancelled ones excluded, over interventions "
    "resolved in the period; treated interventions only (the holdout's rate is shown "
    "beside it as the control)."
)
CHURN_DEFINITION = (
    "Churn, for impact: an at-risk episode (a lead's run through stages 1-3) that ended in "
    "the period without a success, i.e. its last intervention resolved as churned, "
    "unsubscribed or no_response (cancelled episodes are excluded). Treated and holdout "
    "leads are randomized per lead and measured over the same windows."
)
PERIODS = {"7d": 7, "30d": 30, "90d": 90}


@dataclass(frozen=True)
class Period:
    first_day: dt.date
    last_day: dt.date

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1


def period_resolve(
    *,
    period: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    today: dt.date | None = None,
) -> Period:
    """7d/30d/90d end today (UTC) and include it; from/to are inclusive UTC days."""
    today = today or timezone.now().date()
    if date_from is not None:
        return Period(date_from, date_to or today)
    days = PERIODS[period or "30d"]
    return Period(today - dt.timedelta(days=days - 1), today)


# --- Events ---------------------------------------------------------------------------


def tracking_events_after(*, tenant: Tenant, after_id: int = 0, limit: int = 500) -> QuerySet:
    return TrackingEvent.objects.filter(tenant=tenant, id__gt=after_id).order_by("id")[:limit]


def intervention_timeline(*, intervention: Intervention) -> QuerySet:
    return TrackingEvent.objects.filter(
        tenant_id=intervention.tenant_id, intervention_id=intervention.id
    ).order_by("id")


def lead_timeline(*, tenant_id: int, lead_id: int) -> QuerySet:
    return TrackingEvent.objects.filter(tenant_id=tenant_id, lead_id=lead_id).order_by("id")


# --- Rollups or raw, per day ------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    """How a period is answered: rollup rows for every day except `live_only`, and the
    live tables' facts timed in [live_start, live_end) for the days in `live`.

    The live window is one interval: it starts at the first day not complete (at that
    day's `through` when the intraday refresh has rolled its morning up) and runs to the
    end of the last. A later partly rolled day inside it is read live in full."""

    live: list[dt.date]
    live_only: list[dt.date]
    live_start: dt.datetime | None
    live_end: dt.datetime | None


def _one_snapshot(report: Callable[..., dict]) -> Callable[..., dict]:
    """Run a report's reads in one REPEATABLE READ, READ ONLY transaction on the
    analytics database (the replica when there is one).

    A report reads the rollup marks, then the rollup rows and the live facts, in
    separate statements. Under READ COMMITTED an intraday refresh committing between
    them would move the watermark under the report: the rows would cover up to the new
    one while the live part starts at the old, and the facts between would count twice.
    Inside a caller's transaction the caller's isolation holds."""

    @functools.wraps(report)
    def wrapper(*args, **kwargs) -> dict:
        alias = analytics_db()
        if connections[alias].in_atomic_block:
            return report(*args, **kwargs)
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return report(*args, **kwargs)

    return wrapper


def _coverage(tenant_id: int, period: Period) -> Coverage:
    through = dict(
        RollupDay.objects.using(analytics_db())
        .filter(tenant_id=tenant_id, day__gte=period.first_day, day__lte=period.last_day)
        .values_list("day", "through")
    )
    days = [period.first_day + dt.timedelta(days=i) for i in range(period.days)]
    live = [d for d in days if d not in through or through[d] is not None]
    if not live:
        return Coverage([], [], None, None)
    start, end = day_bounds(live[0], live[-1])
    first_through = through.get(live[0])
    if first_through is not None:
        return Coverage(live, live[1:], first_through, end)
    return Coverage(live, live, start, end)


def _facts(
    model,
    columns: tuple[str, ...],
    raw_select: str,
    raw_params: dict,
    tenant_id: int,
    period,
    cover: Coverage | None = None,
) -> tuple[str, dict]:
    """SQL of the period's rows: rollup rows where the days are rolled up, and aggregates
    of the live tables over the rest (see Coverage). A report reading several facts
    passes the coverage it read once, so all of them split the period alike."""
    cols = ", ".join(("day", *columns))
    if cover is None:
        cover = _coverage(tenant_id, period)
    params = {
        **raw_params,
        "tenant": tenant_id,
        "first_day": period.first_day,
        "last_day": period.last_day,
        "live": cover.live,
        "live_only": cover.live_only,
    }
    sql = (
        f"SELECT {cols} FROM {model._meta.db_table} WHERE tenant_id = %(tenant)s "
        "AND day >= %(first_day)s AND day <= %(last_day)s AND NOT (day = ANY(%(live_only)s))"
    )
    if cover.live:
        params["start"], params["end"] = cover.live_start, cover.live_end
        sql += f" UNION ALL SELECT {cols} FROM ({raw_select}) raw WHERE day = ANY(%(live)s)"
    return sql, params


def _fetch(sql: str, params: dict) -> list[dict]:
    with connections[analytics_db()].cursor() as cursor:
        cursor.execute(sql, params)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _intervention_groups(tenant_id: int, period: Period, cover: Coverage) -> dict[str, list[dict]]:
    """Rows per breakdown (see rollup_sql.BREAKDOWNS) and arm, summed over the period."""
    facts, params = _facts(
        InterventionDailyBreakdown,
        (*BREAKDOWN_COLUMNS, *INTERVENTION_COUNTS, *INTERVENTION_HISTOGRAMS),
        breakdown_select(intervention_rollup_select()),
        {},
        tenant_id,
        period,
        cover,
    )
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in INTERVENTION_COUNTS)
    # Only the overall rows carry latency histograms (see breakdown_select), so they are
    # summed over those rows alone (two per day), not filtered out of every row: a year
    # of breakdown rows times every bucket was most of a 365-day report's time.
    hists = ", ".join(f"{hist_sum(h)} AS {h}" for h in INTERVENTION_HISTOGRAMS)
    hist_cols = ", ".join(f"h.{h}" for h in INTERVENTION_HISTOGRAMS)
    sql = (
        f"WITH f AS MATERIALIZED ({facts}), "
        f"h AS (SELECT is_holdout, {hists} FROM f WHERE dimension = 'overall' "
        "GROUP BY is_holdout), "
        f"g AS (SELECT dimension, stage, value, is_holdout, {sums} FROM f "
        "GROUP BY dimension, stage, value, is_holdout) "
        f"SELECT g.*, {hist_cols} FROM g LEFT JOIN h "
        "ON g.dimension = 'overall' AND h.is_holdout = g.is_holdout"
    )
    groups: dict[str, list[dict]] = {name: [] for name in BREAKDOWNS}
    for row in _fetch(sql, params):
        dims = BREAKDOWNS[row["dimension"]]
        rest = [d for d in dims if d != "stage"]
        if rest:
            row[rest[0]] = row["value"]
        groups[row["dimension"]].append(row)
    return groups


def _message_groups(tenant_id: int, period: Period, cover: Coverage) -> list[dict]:
    raw, cost_params = message_rollup_select(message_costs())
    facts, params = _facts(
        MessageDailyRollup,
        (*MESSAGE_DIMENSIONS, *MESSAGE_COUNTS, *MESSAGE_HISTOGRAMS),
        raw,
        cost_params,
        tenant_id,
        period,
        cover,
    )
    sums = ", ".join(f"COALESCE(sum({c}), 0) AS {c}" for c in MESSAGE_COUNTS)
    sql = (
        f"SELECT GROUPING(channel) AS g_channel, GROUPING(provider) AS g_provider, "
        f"channel, provider, {sums}, {hist_sum('delivery_hist')} AS delivery_hist "
        f"FROM ({facts}) f WHERE stage > 0 "
        "GROUP BY GROUPING SETS ((), (channel), (channel, provider))"
    )
    return _fetch(sql, params)


def _escalation_totals(tenant_id: int, period: Period, cover: Coverage) -> dict:
    facts, params = _facts(
        EscalationDailyRollup,
        (*ESCALATION_COUNTS, *ESCALATION_HISTOGRAMS),
        escalation_rollup_select(),
        {},
        tenant_id,
        period,
        cover,
    )
    sums = ", ".join(f"COALESCE(sum({c}), 0)::bigint AS {c}" for c in ESCALATION_COUNTS)
    hists = ", ".join(f"{hist_sum(h)} AS {h}" for h in ESCALATION_HISTOGRAMS)
    return _fetch(f"SELECT {sums}, {hists} FROM ({facts}) f", params)[0]


# --- Shaping ----------------------------------------------------------------------------


def _rate(successes: int, n: int) -> dict:
    interval = stats.wilson(successes, n)
    return {
        "n": n,
        "successes": successes,
        "rate": round(interval.estimate, 4) if interval else None,
        "ci_low": round(interval.low, 4) if interval else None,
        "ci_high": round(interval.high, 4) if interval else None,
    }


def _row_rate(row: dict) -> dict:
    return _rate(int(row["successes"]), int(row["resolved"]) - int(row["cancelled"]))


def _latency(hist) -> dict:
    hist = [int(x) for x in hist or []]
    p = {f"p{int(q * 100)}": stats.histogram_percentile(hist, q) for q in (0.5, 0.9, 0.95)}
    return {"n": sum(hist), **{k: round(v, 1) if v is not None else None for k, v in p.items()}}


def _stage_targets(tenant: Tenant) -> dict[int, float]:
    policy = InterventionPolicy.objects.filter(tenant=tenant, is_active=True).first()
    if policy is None:
        return {}
    return {s.stage: float(s.success_target) for s in policy.stages.all()}


def _segment_rows(rows: list[dict], key: str, targets: dict | None = None) -> list[dict]:
    """Treated success per value of `key`, with the holdout's rate beside it."""
    treated, holdout = {}, {}
    for row in rows:
        (holdout if row["is_holdout"] else treated)[row[key]] = row
    out = []
    for value in sorted(set(treated) | set(holdout), key=lambda v: (v is None, str(v))):
        entry = {key: value, **(_row_rate(treated[value]) if value in treated else _rate(0, 0))}
        entry["holdout"] = _row_rate(holdout[value]) if value in holdout else _rate(0, 0)
        if targets is not None:
            entry["target"] = targets.get(value)
        out.append(entry)
    return out


@_one_snapshot
def analytics_success(*, tenant: Tenant, period: Period, now: dt.datetime | None = None) -> dict:
    """Volume, success rates, funnel, latencies and escalations over a period, from the
    daily rollups for rolled-up days and from the source tables for the rest."""
    now = now or timezone.now()
    cover = _coverage(tenant.id, period)
    groups = _intervention_groups(tenant.id, period, cover)
    targets = _stage_targets(tenant)
    treated_overall = next((r for r in groups["overall"] if not r["is_holdout"]), None)
    holdout_overall = next((r for r in groups["overall"] if r["is_holdout"]), None)
    empty = dict.fromkeys(INTERVENTION_COUNTS, 0)

    def treated_rows(name: str) -> list[dict]:
        return [r for r in groups[name] if not r["is_holdout"]]

    volume = {
        "started": sum(int(r["started"]) for r in groups["overall"]),
        "started_treated": int((treated_overall or empty)["started"]),
        "started_holdout": int((holdout_overall or empty)["started"]),
        "by_stage": [
            {"stage": r["stage"], "started": int(r["started"])}
            for r in sorted(treated_rows("stage"), key=lambda r: r["stage"])
        ],
        "by_channel": [
            {"channel": r["channel"], "started": int(r["started"])}
            for r in sorted(treated_rows("channel"), key=lambda r: r["channel"])
        ],
        "by_stage_and_channel": [
            {"stage": r["stage"], "channel": r["channel"], "started": int(r["started"])}
            for r in sorted(treated_rows("stage_channel"), key=lambda r: (r["stage"], r["channel"]))
        ],
    }
    outcomes = {
        k: int((treated_overall or empty)[k])
        for k in ("re_engaged", "converted", "churned", "no_response", "unsubscribed", "cancelled")
    }
    success = {
        "overall": _row_rate(treated_overall) if treated_overall else _rate(0, 0),
        "holdout": _row_rate(holdout_overall) if holdout_overall else _rate(0, 0),
        "by_stage": _segment_rows(groups["stage"], "stage", targets),
        "by_channel": _segment_rows(treated_rows("channel"), "channel"),
        "by_variant": [
            {"stage": r["stage"], "variant": r["variant"], **_row_rate(r)}
            for r in sorted(treated_rows("variant"), key=lambda r: (r["stage"], r["variant"]))
        ],
        "by_segment": {
            key: _segment_rows(groups[key], key)
            for key in ("source", "price_band", "pipeline_stage", "tier_at_start")
        },
    }
    messages = _message_groups(tenant.id, period, cover)
    funnel = []
    delivery_hist: list = []
    for row in messages:
        if row["g_channel"] == 1:
            delivery_hist = row["delivery_hist"]
        elif row["g_provider"] == 1:
            funnel.append(_funnel_row(row))
    escalations = _escalation_totals(tenant.id, period, cover)
    return {
        "period": _period_out(period, cover),
        "definition": SUCCESS_DEFINITION,
        "volume": volume,
        "outcomes": outcomes,
        "success": success,
        "funnel": sorted(funnel, key=lambda r: r["channel"]),
        "latency_seconds": {
            "detection_to_first_send": _latency((treated_overall or {}).get("first_send_hist")),
            "send_to_delivered": _latency(delivery_hist),
            "start_to_resolution": _latency((treated_overall or {}).get("resolution_hist")),
        },
        "escalations": {
            "opened": int(escalations["opened"]),
            "acknowledged": int(escalations["acknowledged"]),
            "resolved": int(escalations["resolved"]),
            "sla_breaches": int(escalations["breached"]),
            "time_to_acknowledge_seconds": _latency(escalations["acknowledge_hist"]),
            "time_to_resolve_seconds": _latency(escalations["resolve_hist"]),
        },
        "now": analytics_now(tenant=tenant),
        "targets": {
            "stage_success": {str(k): v for k, v in sorted(targets.items())},
            **settings.TRACKING_BRIEF_TARGETS,
        },
    }


def _funnel_row(row: dict) -> dict:
    sent = int(row["sent"])

    def share(x) -> float | None:
        return round(int(x) / sent, 4) if sent else None

    return {
        "channel": row["channel"],
        "queued": int(row["created"]),
        "sent": sent,
        "delivered": int(row["delivered"]),
        "opened_or_clicked": int(row["opened_or_clicked"]),
        "replied": int(row["replied"]),
        "failed": int(row["failed"]),
        "suppressed": int(row["suppressed"]),
        "delivered_rate": share(row["delivered"]),
        "opened_or_clicked_rate": share(row["opened_or_clicked"]),
        "replied_rate": share(row["replied"]),
    }


def _period_out(period: Period, cover: Coverage) -> dict:
    return {
        "from": period.first_day.isoformat(),
        "to": period.last_day.isoformat(),
        "days": period.days,
        "days_from_rollups": period.days - len(cover.live),
        "days_from_raw": len(cover.live),
        "live_since": cover.live_start.isoformat() if cover.live_start else None,
    }


def analytics_now(*, tenant: Tenant) -> dict:
    """The live state, not a period: open interventions, those waiting on the lead, open
    escalations."""
    open_qs = Intervention.objects.filter(tenant=tenant, status__in=OPEN_STATUSES)
    return {
        "active_interventions": open_qs.filter(is_holdout=False).count(),
        "awaiting_response": open_qs.filter(
            is_holdout=False, status=InterventionStatus.ACTIVE
        ).count(),
        "open_escalations": Escalation.objects.filter(
            tenant=tenant, status__in=(EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)
        ).count(),
    }


# --- Business impact --------------------------------------------------------------------


def _money(value: float | Decimal | None, places: str = "0.01") -> str | None:
    if value is None:
        return None
    return str(Decimal(str(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def _cost(value: float | Decimal | None) -> str | None:
    # Messages cost fractions of a cent: costs keep four places.
    return _money(value, "0.0001")


def _interval_out(interval: stats.Interval | None, digits: int = 4) -> dict | None:
    if interval is None:
        return None
    return {
        "estimate": round(interval.estimate, digits),
        "ci_low": round(interval.low, digits),
        "ci_high": round(interval.high, digits),
    }


def _effective_days(tenant: Tenant, period: Period, now: dt.datetime) -> float:
    """Days of the period the program actually ran: from the later of the period start
    and the first intervention, to the earlier of the period end and now."""
    start, end = day_bounds(period.first_day, period.last_day)
    first = Intervention.objects.filter(tenant=tenant).aggregate(first=Min("planned_at"))["first"]
    if first is not None and first > start:
        start = first
    end = min(end, now)
    return max((end - start).total_seconds() / 86400, 0.0)


def pre_deployment_churn(*, tenant: Tenant, minimum: int) -> dict:
    """Before the first intervention: of the leads active in the 180 days before it, the
    share with a lost opportunity in that window. All leads, not only at-risk ones: a
    rough baseline, shown when there are at least `minimum` such leads."""
    first = Intervention.objects.filter(tenant=tenant).aggregate(first=Min("planned_at"))["first"]
    if first is None:
        return {"available": False, "reason": "no intervention yet"}
    window = LeadActivity.objects.filter(
        tenant=tenant, occurred_at__lt=first, occurred_at__gte=first - dt.timedelta(days=180)
    )
    n = window.values("lead_id").distinct().count()
    if n < minimum:
        return {
            "available": False,
            "reason": f"only {n} leads with activity in the 180 days before deployment "
            f"(minimum {minimum})",
        }
    lost = window.filter(kind=ActivityKind.OPPORTUNITY_LOST).values("lead_id").distinct().count()
    return {
        "available": True,
        "window_start": (first - dt.timedelta(days=180)).isoformat(),
        "deployed_at": first.isoformat(),
        **_rate(lost, n),
    }


@_one_snapshot
def analytics_impact(*, tenant: Tenant, period: Period, now: dt.datetime | None = None) -> dict:
    """Churn of at-risk episodes, treated against the randomized holdout, with intervals;
    incremental saves, revenue protected, cost and ROI, annualised."""
    now = now or timezone.now()
    minimum = settings.TRACKING_MIN_ARM_SIZE
    cover = _coverage(tenant.id, period)
    groups = _intervention_groups(tenant.id, period, cover)
    arms = {bool(r["is_holdout"]): r for r in groups["overall"]}
    empty = dict.fromkeys(INTERVENTION_COUNTS, 0)
    treated, holdout = arms.get(False, empty), arms.get(True, empty)
    n_t, n_h = int(treated["episodes_ended"]), int(holdout["episodes_ended"])
    churn_t = n_t - int(treated["episodes_saved"])
    churn_h = n_h - int(holdout["episodes_saved"])

    messages = _message_groups(tenant.id, period, cover)
    total = next((r for r in messages if r["g_channel"] == 1), None)
    cost = Decimal(total["cost"] or 0) if total else Decimal(0)
    by_channel = [
        {
            "channel": r["channel"],
            "provider": r["provider"],
            "sent": int(r["sent"]),
            "cost": _cost(r["cost"]),
            "cost_reported_by_provider": int(r["cost_reported"]),
            "cost_from_table": int(r["cost_estimated"]),
        }
        for r in sorted(messages, key=lambda r: (r["channel"] or "", r["provider"] or ""))
        if r["g_provider"] == 0
    ]
    interventions_treated = int(treated["started"])
    days = _effective_days(tenant, period, now)
    report: dict = {
        "period": {**_period_out(period, cover), "effective_days": round(days, 2)},
        "definition": CHURN_DEFINITION,
        "currency": tenant.currency,
        "saved_lead_value": _money(tenant.saved_lead_value),
        "arms": {
            "treated": {"episodes": n_t, "churned": churn_t, **_arm_rate(churn_t, n_t)},
            "holdout": {"episodes": n_h, "churned": churn_h, **_arm_rate(churn_h, n_h)},
        },
        "minimum_per_arm": minimum,
        "cost": {
            "total": _cost(cost),
            "messages_sent": int(total["sent"]) if total else 0,
            "by_channel_and_provider": by_channel,
            "interventions_treated": interventions_treated,
            "per_intervention": _cost(cost / interventions_treated)
            if interventions_treated
            else None,
        },
        "targets": dict(settings.TRACKING_BRIEF_TARGETS),
        "pre_deployment": pre_deployment_churn(tenant=tenant, minimum=minimum),
    }
    if n_t < minimum or n_h < minimum:
        report["sufficient_data"] = False
        report["impact"] = None
        report["message"] = (
            f"Too few ended episodes to measure impact: {n_t} treated and {n_h} holdout; "
            f"at least {minimum} in each arm are needed."
        )
        return report
    report["sufficient_data"] = True
    report["impact"] = impact_figures(
        churn_treated=churn_t,
        n_treated=n_t,
        churn_holdout=churn_h,
        n_holdout=n_h,
        saved_lead_value=tenant.saved_lead_value,
        cost=cost,
        days=days,
    )
    return report


def _arm_rate(churned: int, n: int) -> dict:
    rate = _rate(churned, n)
    return {"churn_rate": rate["rate"], "ci_low": rate["ci_low"], "ci_high": rate["ci_high"]}


def impact_figures(
    *,
    churn_treated: int,
    n_treated: int,
    churn_holdout: int,
    n_holdout: int,
    saved_lead_value: Decimal,
    cost: Decimal,
    days: float,
) -> dict:
    """The lift arithmetic of one report, from counts (see tracking.stats for formulas)."""
    # Absolute reduction = holdout churn - treated churn (positive = fewer churned).
    absolute = stats.newcombe_difference(churn_holdout, n_holdout, churn_treated, n_treated)
    relative = stats.relative_reduction(churn_treated, n_treated, churn_holdout, n_holdout)
    saves = stats.incremental_saves(absolute, n_treated)
    value = float(saved_lead_value)
    revenue = stats.Interval(saves.estimate * value, saves.low * value, saves.high * value)
    cost_f = float(cost)
    roi = stats.roi(revenue.estimate, cost_f)
    roi_low = stats.roi(revenue.low, cost_f)
    roi_high = stats.roi(revenue.high, cost_f)

    def yearly(x: float | None) -> str | None:
        return _money(stats.annualise(x, days)) if x is not None and days > 0 else None

    return {
        "absolute_reduction": _interval_out(absolute),
        "relative_reduction": _interval_out(relative),
        "incremental_saves": _interval_out(saves, 2),
        "revenue_protected": {
            "estimate": _money(revenue.estimate),
            "ci_low": _money(revenue.low),
            "ci_high": _money(revenue.high),
        },
        "cost_per_incremental_save": _cost(cost_f / saves.estimate) if saves.estimate > 0 else None,
        "roi": {
            "estimate": round(roi, 4) if roi is not None else None,
            "ci_low": round(roi_low, 4) if roi_low is not None else None,
            "ci_high": round(roi_high, 4) if roi_high is not None else None,
        },
        "annual": {
            "days_measured": round(days, 2),
            "incremental_saves": round(stats.annualise(saves.estimate, days), 2)
            if days > 0
            else None,
            "revenue_protected": yearly(revenue.estimate),
            "cost": yearly(cost_f),
            "net": yearly(revenue.estimate - cost_f),
            # ROI is a ratio of two flows that scale alike: the same over a year.
            "roi": round(roi, 4) if roi is not None else None,
        },
    }
