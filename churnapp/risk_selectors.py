"""Risk reads: point-in-time features in one SQL query per chunk, labels, thresholds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from django.db import connection

from churnapp.ml.features import (
    FAMILIES,
    INBOUND_KINDS,
    KIND_FAMILY,
    LOOKBACK_DAYS,
    OUTBOUND_KINDS,
    RAW_COLUMNS,
    REPLY_KINDS,
    WINDOWS,
    RawFeatures,
)
from churnapp.models import (
    ChurnDefinition,
    Lead,
    LeadActivity,
    LeadInterventionEvent,
    LeadStatus,
    RiskAssessment,
    RiskThresholds,
    RiskTier,
    Tenant,
)

ACTIVITY = LeadActivity._meta.db_table
LEAD = Lead._meta.db_table
INTERVENTION = LeadInterventionEvent._meta.db_table


def _sql_list(values: Sequence[str]) -> str:
    # Only our own constant kind names reach here, never input.
    return ", ".join(f"'{v}'" for v in values)


def _family_case() -> str:
    whens = " ".join(f"WHEN '{kind}' THEN '{fam}'" for kind, fam in KIND_FAMILY.items())
    return f"CASE a.kind {whens} ELSE NULL END"


def _feature_sql(where: str) -> str:
    per_family = []
    for fam in FAMILIES:
        per_family.append(f"MIN(age_d) FILTER (WHERE fam = '{fam}') AS days_since_{fam}")
    for fam in FAMILIES:
        for w in WINDOWS:
            per_family.append(
                f"COUNT(*) FILTER (WHERE fam = '{fam}' AND age_d <= {w}) AS n{w}_{fam}"
            )
    agg_cols = ",\n            ".join(per_family)
    select_cols = ", ".join(
        f"agg.{c}" if c not in ("unanswered_outbound", "median_reply_latency_hours") else f"lat.{c}"
        for c in RAW_COLUMNS
        if c != "lead_age_days"
        and not c.startswith("interventions")
        and c != "days_since_intervention"
    )
    # Every read of activity is bounded by occurred_at <= as_of: nothing after the
    # snapshot instant can leak into its features. The (lead_id, occurred_at) INCLUDE
    # (kind) index answers the activity part without touching the heap.
    return f"""
    WITH leads AS MATERIALIZED (
        SELECT l.id, l.pipeline_stage, l.source, l.assigned_agent_id,
               COALESCE(l.crm_created_at, l.created_at) AS born
        FROM {LEAD} l
        WHERE {where}
    ),
    fam AS MATERIALIZED (
        SELECT a.lead_id, a.occurred_at,
               EXTRACT(EPOCH FROM (%(as_of)s - a.occurred_at)) / 86400.0 AS age_d,
               {_family_case()} AS fam,
               a.kind IN ({_sql_list(INBOUND_KINDS)}) AS inbound,
               a.kind IN ({_sql_list(REPLY_KINDS)}) AS reply
        FROM leads JOIN {ACTIVITY} a ON a.lead_id = leads.id
        WHERE a.occurred_at <= %(as_of)s
          AND a.occurred_at > %(as_of)s - interval '{LOOKBACK_DAYS} days'
    ),
    agg AS MATERIALIZED (
        SELECT lead_id,
            {agg_cols},
            MIN(age_d) FILTER (WHERE inbound) AS days_since_inbound,
            COUNT(*) FILTER (WHERE inbound AND age_d <= 14) AS inbound_last14,
            COUNT(*) FILTER (WHERE inbound AND age_d > 14 AND age_d <= 28) AS inbound_prev14,
            COUNT(*) FILTER (WHERE inbound AND age_d > 14 AND age_d <= 90) AS inbound_baseline,
            COUNT(*) FILTER (WHERE fam = 'email_open' AND age_d > 14 AND age_d <= 28)
                AS email_open_prev14,
            COUNT(*) FILTER (WHERE inbound AND age_d <= 30) AS inbound_30d,
            COUNT(*) FILTER (WHERE fam = 'outbound' AND age_d <= 30) AS outbound_30d,
            MIN(occurred_at) AS first_seen
        FROM fam GROUP BY lead_id
    ),
    touches AS (
        -- For each touch, the next reply after it: a running MIN over the rows that
        -- follow (descending order keeps the frame start fixed, so it stays linear).
        SELECT lead_id, occurred_at, age_d, fam,
               MIN(occurred_at) FILTER (WHERE reply) OVER (
                   PARTITION BY lead_id ORDER BY occurred_at DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
               ) AS next_reply
        FROM fam WHERE reply OR fam = 'outbound'
    ),
    lat AS MATERIALIZED (
        SELECT lead_id,
               COUNT(*) FILTER (WHERE next_reply IS NULL) AS unanswered_outbound,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY EXTRACT(EPOCH FROM (next_reply - occurred_at)) / 3600.0
               ) FILTER (WHERE next_reply IS NOT NULL AND age_d <= 90) AS median_reply_latency_hours
        FROM touches WHERE fam = 'outbound' GROUP BY lead_id
    ),
    iv AS MATERIALIZED (
        SELECT e.lead_id,
               COUNT(*) FILTER (WHERE e.outcome = 'started' AND e.occurred_at > %(as_of)s - interval '90 days') AS n,
               COUNT(*) FILTER (WHERE e.outcome = 'no_response' AND e.occurred_at > %(as_of)s - interval '90 days') AS no_response,
               COUNT(*) FILTER (WHERE e.outcome = 're_engaged' AND e.occurred_at > %(as_of)s - interval '90 days') AS re_engaged,
               MIN(EXTRACT(EPOCH FROM (%(as_of)s - e.occurred_at)) / 86400.0) AS days_since
        FROM leads JOIN {INTERVENTION} e ON e.lead_id = leads.id
        WHERE e.occurred_at <= %(as_of)s
        GROUP BY e.lead_id
    )
    SELECT leads.id, leads.pipeline_stage, leads.source, leads.assigned_agent_id,
           EXTRACT(EPOCH FROM (%(as_of)s - LEAST(leads.born, COALESCE(agg.first_seen, leads.born))))
               / 86400.0 AS lead_age_days,
           {select_cols},
           iv.n, iv.no_response, iv.re_engaged, iv.days_since
    FROM leads
    LEFT JOIN agg ON agg.lead_id = leads.id
    LEFT JOIN lat ON lat.lead_id = leads.id
    LEFT JOIN iv ON iv.lead_id = leads.id
    ORDER BY leads.id
    """


def lead_features(
    *,
    tenant_id: int,
    as_of: dt.datetime,
    lead_ids: Sequence[int] | None = None,
    id_range: tuple[int, int] | None = None,
    only_active: bool = False,
    agent_response_hours: dict[str, float] | None = None,
) -> RawFeatures:
    """Features of a set of leads as of an instant, in one query. Pass `lead_ids` or an
    inclusive `id_range` (batch chunks); `only_active` skips lost, converted and deleted."""
    where = ["l.tenant_id = %(tenant)s"]
    params: dict = {"tenant": tenant_id, "as_of": as_of}
    if lead_ids is not None:
        where.append("l.id = ANY(%(ids)s)")
        params["ids"] = list(lead_ids)
    if id_range is not None:
        where.append("l.id BETWEEN %(lo)s AND %(hi)s")
        params["lo"], params["hi"] = id_range
    if only_active:
        where.append(f"l.status = '{LeadStatus.ACTIVE}' AND l.deleted_at IS NULL")
    with connection.cursor() as cursor:
        cursor.execute(_feature_sql(" AND ".join(where)), params)
        rows = cursor.fetchall()
    return RawFeatures.from_rows(rows, agent_response_hours)


def agent_response_hours(*, tenant_id: int, as_of: dt.datetime, days: int = 30) -> dict[str, float]:
    """Median hours from a lead's message to the next outbound touch on that lead, per
    assigned agent, over the `days` before `as_of`; key "*" is the tenant-wide median."""
    sql = f"""
    WITH s AS (
        SELECT a.lead_id, a.occurred_at, a.kind,
               MIN(a.occurred_at) FILTER (WHERE a.kind IN ({_sql_list(OUTBOUND_KINDS)})) OVER (
                   PARTITION BY a.lead_id ORDER BY a.occurred_at DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
               ) AS next_touch
        FROM {ACTIVITY} a
        WHERE a.tenant_id = %(tenant)s
          AND a.occurred_at <= %(as_of)s
          AND a.occurred_at > %(as_of)s - make_interval(days => %(days)s)
          AND a.kind IN ({_sql_list(REPLY_KINDS + OUTBOUND_KINDS)})
    ), answered AS (
        SELECT l.assigned_agent_id AS agent_id,
               EXTRACT(EPOCH FROM (s.next_touch - s.occurred_at)) / 3600.0 AS hours
        FROM s JOIN {LEAD} l ON l.id = s.lead_id
        WHERE s.kind IN ({_sql_list(REPLY_KINDS)}) AND s.next_touch IS NOT NULL
    )
    SELECT agent_id::text, percentile_cont(0.5) WITHIN GROUP (ORDER BY hours)
    FROM answered WHERE agent_id IS NOT NULL GROUP BY agent_id
    UNION ALL
    SELECT '*', percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) FROM answered
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"tenant": tenant_id, "as_of": as_of, "days": days})
        return {key: float(value) for key, value in cursor.fetchall() if value is not None}


def lead_labels(
    *,
    tenant_id: int,
    lead_ids: Sequence[int],
    as_of: dt.datetime,
    horizon_days: int,
    lost_is_churn: bool = True,
) -> dict[int, int]:
    """Churn labels for snapshots at `as_of`: 1 if the lead is marked lost, or does
    nothing inbound, within the horizon after it. Leads not yet seen, or already won or
    lost at `as_of`, get no label (they are not in the result)."""
    sql = f"""
    SELECT a.lead_id,
           BOOL_OR(a.kind = 'opportunity_lost' AND a.occurred_at > %(t)s) AS lost,
           BOOL_OR(a.kind = 'opportunity_won' AND a.occurred_at > %(t)s) AS won,
           BOOL_OR(a.kind IN ({_sql_list(INBOUND_KINDS)}) AND a.occurred_at > %(t)s) AS inbound
    FROM {ACTIVITY} a
    WHERE a.tenant_id = %(tenant)s AND a.lead_id = ANY(%(ids)s)
      AND a.occurred_at <= %(t)s + make_interval(days => %(h)s)
    GROUP BY a.lead_id
    HAVING BOOL_OR(a.occurred_at <= %(t)s)
       AND NOT BOOL_OR(a.kind IN ('opportunity_lost', 'opportunity_won') AND a.occurred_at <= %(t)s)
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"tenant": tenant_id, "ids": list(lead_ids), "t": as_of, "h": horizon_days}
        )
        rows = cursor.fetchall()
    labels = {}
    for lead_id, lost, won, inbound in rows:
        churned = (lost and lost_is_churn) or (not inbound and not won)
        labels[lead_id] = int(bool(churned))
    return labels


def tenant_lead_ids(*, tenant_id: int, only_active: bool) -> np.ndarray:
    qs = Lead.objects.filter(tenant_id=tenant_id)
    if only_active:
        qs = qs.filter(status=LeadStatus.ACTIVE, deleted_at__isnull=True)
    return np.fromiter(
        qs.order_by("id").values_list("id", flat=True).iterator(2000), dtype=np.int64
    )


# --- Thresholds: the one place a probability becomes a tier -----------------------------


def tenant_thresholds(*, tenant_id: int) -> RiskThresholds:
    """The tenant's thresholds, created with the defaults the first time they are read."""
    thresholds, _ = RiskThresholds.objects.get_or_create(tenant_id=tenant_id)
    return thresholds


def tier_for_score(score: float, thresholds: RiskThresholds) -> str:
    if score >= thresholds.critical:
        return RiskTier.CRITICAL
    if score >= thresholds.active_risk:
        return RiskTier.ACTIVE_RISK
    if score >= thresholds.early_warning:
        return RiskTier.EARLY_WARNING
    return RiskTier.LOW


def tiers_for_scores(scores: np.ndarray, thresholds: RiskThresholds) -> list[str]:
    """`tier_for_score` for many scores at once (same thresholds, same boundaries)."""
    cuts = np.array([thresholds.early_warning, thresholds.active_risk, thresholds.critical])
    names = np.array(
        [RiskTier.LOW, RiskTier.EARLY_WARNING, RiskTier.ACTIVE_RISK, RiskTier.CRITICAL]
    )
    return names[np.searchsorted(cuts, scores, side="right")].tolist()


def tenant_churn_definition(*, tenant_id: int) -> ChurnDefinition:
    definition, _ = ChurnDefinition.objects.get_or_create(tenant_id=tenant_id)
    return definition


def lead_risk_history(*, lead: Lead, limit: int = 50):
    return RiskAssessment.objects.filter(lead=lead).order_by("-assessed_at", "-id")[:limit]


def tenant_get(*, tenant_id: int) -> Tenant:
    return Tenant.objects.get(pk=tenant_id)
