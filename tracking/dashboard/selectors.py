"""Reads behind the dashboard pages: aggregates in SQL, per-page rows only, never per lead."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from churnapp.models import Agent, Lead, LeadActivity, RiskTier, Tenant
from churnapp.risk_selectors import lead_risk_history
from interventions.models import OPEN_STATUSES, Escalation, EscalationStatus, Intervention
from interventions.selectors import escalation_queue
from notifications.models import Message
from tracking import stats
from tracking.events import event_payload
from tracking.models import EventKind, InterventionDailyRollup, TrackingEvent
from tracking.rollup_sql import intervention_rollup_select
from tracking.selectors import (
    Period,
    _facts,
    _fetch,
    analytics_impact,
    analytics_success,
    lead_timeline,
)

AT_RISK_TIERS = (RiskTier.EARLY_WARNING, RiskTier.ACTIVE_RISK, RiskTier.CRITICAL)
TIER_ORDER = [t.value for t in RiskTier]
PAGE_SIZE = 25
FEED_SIZE = 30


def _latest_reasons(tenant_id: int, lead_ids: list[int]) -> dict[int, dict]:
    """The newest tier change of each lead on the page: reasons, score, model version.

    One query for the page (DISTINCT ON over the (lead_id, id) index), not one per lead."""
    rows = (
        TrackingEvent.objects.filter(
            tenant_id=tenant_id, lead_id__in=lead_ids, kind=EventKind.TIER_CHANGED
        )
        .order_by("lead_id", "-id")
        .distinct("lead_id")
        .values("lead_id", "data", "occurred_at")
    )
    return {r["lead_id"]: {**r["data"], "at": r["occurred_at"]} for r in rows}


def _lead_reasons(lead: Lead, latest: dict | None) -> list[dict]:
    # Scoring keeps the current reasons on the lead; a lead scored before it did has
    # them only in its last tier change.
    if lead.risk_reasons:
        return list(lead.risk_reasons)
    return list((latest or {}).get("reasons") or [])


def _open_interventions(tenant_id: int, lead_ids: list[int]) -> dict[int, Intervention]:
    rows = Intervention.objects.filter(
        tenant_id=tenant_id, lead_id__in=lead_ids, status__in=OPEN_STATUSES
    ).order_by("lead_id", "-id")
    found: dict[int, Intervention] = {}
    for row in rows:
        found.setdefault(row.lead_id, row)
    return found


# --- Overview ---------------------------------------------------------------------------


def tier_counts(*, tenant: Tenant) -> dict[str, int]:
    """Leads per risk tier: one GROUP BY over the (tenant, risk_tier) index."""
    counts = dict.fromkeys(TIER_ORDER, 0)
    for row in (
        Lead.objects.filter(tenant=tenant, deleted_at__isnull=True)
        .values("risk_tier")
        .annotate(n=Count("id"))
    ):
        counts[row["risk_tier"]] = row["n"]
    return counts


def score_histogram(*, tenant: Tenant, bins: int = 10) -> list[dict]:
    """How many scored leads fall in each tenth of the score range, in one query."""
    sql = (
        "SELECT LEAST(width_bucket(risk_score, 0, 1, %(bins)s), %(bins)s) AS b, count(*) AS n "
        "FROM churnapp_lead WHERE tenant_id = %(tenant)s AND risk_score IS NOT NULL "
        "AND deleted_at IS NULL GROUP BY b ORDER BY b"
    )
    found = {int(r["b"]): int(r["n"]) for r in _fetch(sql, {"bins": bins, "tenant": tenant.id})}
    return [
        {"from": round((b - 1) / bins, 2), "to": round(b / bins, 2), "leads": found.get(b, 0)}
        for b in range(1, bins + 1)
    ]


def churn_series(*, tenant: Tenant, period: Period) -> list[dict]:
    """Churn of ended at-risk episodes per bucket (days for a week, weeks beyond), treated
    against holdout, each with its 95% Wilson interval. From the daily rollups (raw rows
    for days not rolled up yet), so the cost does not grow with the number of leads."""
    facts, params = _facts(
        InterventionDailyRollup,
        ("is_holdout", "episodes_ended", "episodes_saved"),
        intervention_rollup_select(),
        {},
        tenant.id,
        period,
    )
    rows = _fetch(
        "SELECT day, is_holdout, sum(episodes_ended)::bigint AS ended, "
        f"sum(episodes_saved)::bigint AS saved FROM ({facts}) f GROUP BY day, is_holdout",
        params,
    )
    width = 1 if period.days <= 14 else 7
    buckets: dict[dt.date, dict[bool, list[int]]] = {}
    starts = [period.first_day + dt.timedelta(days=i) for i in range(0, period.days, width)]
    for start in starts:
        buckets[start] = {False: [0, 0], True: [0, 0]}
    for row in rows:
        offset = (row["day"] - period.first_day).days // width * width
        start = period.first_day + dt.timedelta(days=offset)
        arm = buckets[start][bool(row["is_holdout"])]
        arm[0] += int(row["ended"]) - int(row["saved"])
        arm[1] += int(row["ended"])
    series = []
    for start in starts:
        point = {"from": start.isoformat(), "days": width}
        for name, holdout in (("treated", False), ("holdout", True)):
            churned, n = buckets[start][holdout]
            interval = stats.wilson(churned, n)
            point[name] = {
                "episodes": n,
                "churned": churned,
                "rate": round(interval.estimate, 4) if interval else None,
                "ci_low": round(interval.low, 4) if interval else None,
                "ci_high": round(interval.high, 4) if interval else None,
            }
        series.append(point)
    return series


@dataclass(frozen=True)
class EscalationSummary:
    open: int
    acknowledged: int
    breached: int
    next_due_at: dt.datetime | None


def escalation_summary(*, tenant: Tenant, now: dt.datetime | None = None) -> EscalationSummary:
    now = now or timezone.now()
    queue = Escalation.objects.filter(tenant=tenant).exclude(status=EscalationStatus.RESOLVED)
    counts = queue.aggregate(
        open=Count("id", filter=Q(status=EscalationStatus.OPEN)),
        acknowledged=Count("id", filter=Q(status=EscalationStatus.ACKNOWLEDGED)),
        breached=Count("id", filter=Q(sla_due_at__lt=now)),
    )
    first = queue.order_by("sla_due_at").values_list("sla_due_at", flat=True).first()
    return EscalationSummary(next_due_at=first, **counts)


def latest_event_id(*, tenant: Tenant) -> int:
    return TrackingEvent.objects.filter(tenant=tenant).aggregate(m=Max("id"))["m"] or 0


def recent_events(*, tenant: Tenant, limit: int = FEED_SIZE) -> list[dict]:
    """The newest lifecycle events for the live feed, oldest first, in the wire shape."""
    rows = list(TrackingEvent.objects.filter(tenant=tenant).order_by("-id")[:limit])
    return [event_payload(e) for e in reversed(rows)]


def overview(*, tenant: Tenant, period: Period) -> dict:
    """Everything the overview shows, from tracking's analytics over the rollups."""
    success = analytics_success(tenant=tenant, period=period)
    impact = analytics_impact(tenant=tenant, period=period)
    return {
        "success": success,
        "impact": impact,
        "tiers": tier_counts(tenant=tenant),
        "score_histogram": score_histogram(tenant=tenant),
        "churn_series": churn_series(tenant=tenant, period=period),
        "escalations": escalation_summary(tenant=tenant),
    }


# --- Leads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadFilters:
    tier: str = ""
    agent_id: int | None = None
    source: str = ""
    pipeline_stage: str = ""


def leads_at_risk(*, tenant: Tenant, filters: LeadFilters) -> QuerySet[Lead]:
    leads = Lead.objects.filter(
        tenant=tenant, deleted_at__isnull=True, risk_tier__in=AT_RISK_TIERS
    ).select_related("assigned_agent")
    if filters.tier:
        leads = leads.filter(risk_tier=filters.tier)
    if filters.agent_id is not None:
        leads = leads.filter(assigned_agent_id=filters.agent_id)
    if filters.source:
        leads = leads.filter(source=filters.source)
    if filters.pipeline_stage:
        leads = leads.filter(pipeline_stage=filters.pipeline_stage)
    return leads.order_by("-risk_score", "id")


def lead_rows(*, tenant: Tenant, leads: list[Lead]) -> list[dict]:
    """One page of leads with their reasons and open intervention: two queries per page."""
    ids = [lead.id for lead in leads]
    latest = _latest_reasons(tenant.id, ids)
    open_iv = _open_interventions(tenant.id, ids)
    return [
        {
            "lead": lead,
            "reasons": _lead_reasons(lead, latest.get(lead.id)),
            "intervention": open_iv.get(lead.id),
        }
        for lead in leads
    ]


def leads_page(*, tenant: Tenant, filters: LeadFilters, page: int) -> tuple[Page, list[dict]]:
    paginator = Paginator(leads_at_risk(tenant=tenant, filters=filters), PAGE_SIZE)
    current = paginator.get_page(page)
    return current, lead_rows(tenant=tenant, leads=list(current.object_list))


def filter_choices(*, tenant: Tenant) -> dict:
    """Values offered by the filters: the tenant's agents and segment values in use."""
    at_risk = Lead.objects.filter(tenant=tenant, risk_tier__in=AT_RISK_TIERS)
    return {
        "tiers": [(t.value, t.label) for t in RiskTier if t.value in AT_RISK_TIERS],
        "agents": list(
            Agent.objects.filter(tenant=tenant, is_active=True)
            .order_by("name")
            .values("id", "name")
        ),
        "sources": list(
            at_risk.exclude(source="")
            .order_by("source")
            .values_list("source", flat=True)
            .distinct()
        ),
        "pipeline_stages": list(
            at_risk.exclude(pipeline_stage="")
            .order_by("pipeline_stage")
            .values_list("pipeline_stage", flat=True)
            .distinct()
        ),
    }


# --- Lead detail ------------------------------------------------------------------------


def risk_history(*, lead: Lead, limit: int = 200) -> list[dict]:
    """Scores over time with the model version that produced each (scoring's assessments:
    tier changes and one daily snapshot per lead)."""
    rows = list(lead_risk_history(lead=lead, limit=limit))
    return [
        {
            "at": r.assessed_at.isoformat(),
            "score": r.score,
            "tier": r.tier,
            "model_version": r.model_version,
        }
        for r in reversed(rows)
    ]


def lead_timeline_entries(*, lead: Lead, limit: int = 300) -> list[dict]:
    """Activity, messages and lifecycle events of one lead, newest first."""
    entries: list[dict] = []
    for a in LeadActivity.objects.filter(tenant_id=lead.tenant_id, lead=lead).order_by(
        "-occurred_at"
    )[:limit]:
        entries.append(
            {
                "at": a.occurred_at,
                "type": "activity",
                "title": a.get_kind_display(),
                "detail": f"{a.direction} via {a.channel}",
            }
        )
    for m in Message.objects.filter(tenant_id=lead.tenant_id, lead=lead).order_by("-created_at")[
        :limit
    ]:
        entries.append(
            {
                "at": m.created_at,
                "type": "message",
                "title": f"{m.get_channel_display()} message: {m.status}",
                "detail": m.subject or m.body_text[:140],
            }
        )
    for e in lead_timeline(tenant_id=lead.tenant_id, lead_id=lead.id).order_by("-id")[:limit]:
        entries.append(
            {
                "at": e.occurred_at,
                "type": "event",
                "title": e.get_kind_display(),
                "detail": " ".join(
                    part
                    for part in (
                        f"stage {e.stage}" if e.stage else "",
                        e.channel,
                        e.data.get("outcome") or "",
                        e.data.get("new_tier") or "",
                    )
                    if part
                ),
                "event_id": e.id,
            }
        )
    entries.sort(key=lambda x: x["at"], reverse=True)
    return entries[:limit]


def lead_detail(*, tenant: Tenant, lead_id: int) -> dict | None:
    lead = Lead.objects.filter(tenant=tenant, pk=lead_id).select_related("assigned_agent").first()
    if lead is None:
        return None
    latest = _latest_reasons(tenant.id, [lead.id]).get(lead.id)
    escalation = (
        Escalation.objects.filter(tenant=tenant, lead=lead)
        .select_related("manager", "intervention")
        .order_by("-opened_at")
        .first()
    )
    return {
        "lead": lead,
        "reasons": _lead_reasons(lead, latest),
        "model_version": getattr(lead, "risk_model_version", "")
        or (latest or {}).get("model_version")
        or "",
        "history": risk_history(lead=lead),
        "timeline": lead_timeline_entries(lead=lead),
        "intervention": _open_interventions(tenant.id, [lead.id]).get(lead.id),
        "escalation": escalation,
    }


# --- Escalations and the agent's view -----------------------------------------------------


def escalation_rows(*, tenant: Tenant) -> QuerySet[Escalation]:
    return escalation_queue(tenant=tenant)


def next_action(*, tier: str, intervention: Intervention | None, escalated: bool) -> str:
    """The rule the agent view follows to suggest what to do next (stated, not learned)."""
    if escalated:
        return "Escalated to your manager: call the lead today and log the outcome."
    if intervention is None:
        if tier == RiskTier.CRITICAL:
            return "No intervention running: call the lead now."
        return "Send a personal check-in; the system will follow up if it stays quiet."
    if intervention.is_holdout:
        return "Control group: keep your usual follow-up, no extra outreach."
    if intervention.stage >= 3:
        return "Critical: call today and offer a meeting or showing."
    if intervention.stage == 2:
        return "Active risk: follow the automated message with a personal call within 24h."
    return "Early warning: an automated check-in went out; reply personally if they answer."


def agent_leads(*, agent: Agent, limit: int = 50) -> list[dict]:
    """The agent's own leads at risk, riskiest first, with reasons and a next action."""
    leads = list(
        Lead.objects.filter(
            tenant_id=agent.tenant_id,
            assigned_agent=agent,
            deleted_at__isnull=True,
            risk_tier__in=AT_RISK_TIERS,
        ).order_by("-risk_score", "id")[:limit]
    )
    rows = lead_rows(tenant=agent.tenant, leads=leads)
    escalated = set(
        Escalation.objects.filter(
            tenant_id=agent.tenant_id, lead_id__in=[r["lead"].id for r in rows]
        )
        .exclude(status=EscalationStatus.RESOLVED)
        .values_list("lead_id", flat=True)
    )
    for row in rows:
        row["next_action"] = next_action(
            tier=row["lead"].risk_tier,
            intervention=row["intervention"],
            escalated=row["lead"].id in escalated,
        )
    return rows
