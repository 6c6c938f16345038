"""Risk reads: point-in-time features in one SQL query per chunk, labels, thresholds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    AssessmentKind,
    ChurnDefinition,
    Lead,
    LeadActivity,
    LeadInterventionEvent,
    LeadStatus,
    RiskAssessment,
    RiskSnapshot,
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


# Families travel through the feature SQL as small integers (their index in FAMILIES):
# the aggregates below test the family of every activity dozens of times.
FAM = {fam: i for i, fam in enumerate(FAMILIES)}


def _family_case() -> str:
    whens = " ".join(f"WHEN '{kind}' THEN {FAM[fam]}" for kind, fam in KIND_FAMILY.items())
    return f"CASE a.kind {whens} ELSE NULL END"


def _feature_sql(where: str) -> str:
    per_family = []
    for fam in FAMILIES:
        per_family.append(f"MIN(age_d) FILTER (WHERE fam = {FAM[fam]}) AS days_since_{fam}")
    for fam in FAMILIES:
        for w in WINDOWS:
            per_family.append(
                f"COUNT(*) FILTER (WHERE fam = {FAM[fam]} AND age_d <= {w}) AS n{w}_{fam}"
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
               date_part('epoch', %(as_of)s - a.occurred_at) / 86400.0 AS age_d,
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
            COUNT(*) FILTER (WHERE fam = {FAM["email_open"]} AND age_d > 14 AND age_d <= 28)
                AS email_open_prev14,
            COUNT(*) FILTER (WHERE inbound AND age_d <= 30) AS inbound_30d,
            COUNT(*) FILTER (WHERE fam = {FAM["outbound"]} AND age_d <= 30) AS outbound_30d,
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
        FROM fam WHERE reply OR fam = {FAM["outbound"]}
    ),
    lat AS MATERIALIZED (
        SELECT lead_id,
               COUNT(*) FILTER (WHERE next_reply IS NULL) AS unanswered_outbound,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY date_part('epoch', next_reply - occurred_at) / 3600.0
               ) FILTER (WHERE next_reply IS NOT NULL AND age_d <= 90) AS median_reply_latency_hours
        FROM touches WHERE fam = {FAM["outbound"]} GROUP BY lead_id
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


def _lead_where(
    lead_ids: Sequence[int] | None, id_range: tuple[int, int] | None, only_active: bool
) -> tuple[str, dict]:
    where = ["l.tenant_id = %(tenant)s"]
    params: dict = {}
    if lead_ids is not None:
        where.append("l.id = ANY(%(ids)s)")
        params["ids"] = list(lead_ids)
    if id_range is not None:
        where.append("l.id BETWEEN %(lo)s AND %(hi)s")
        params["lo"], params["hi"] = id_range
    if only_active:
        where.append(f"l.status = '{LeadStatus.ACTIVE}' AND l.deleted_at IS NULL")
    return " AND ".join(where), params


# One activity as the binary COPY sends it: field count, then (length, value) per field:
# lead id (int8), occurred_at as epoch seconds (float8), code (int2: family index, 7 for
# none, + 8 if the kind is a reply). Fixed width, so numpy reads the buffer in place.
_ROW = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("lead", ">i8"), ("l2", ">i4"), ("t", ">f8"),
     ("l3", ">i4"), ("code", ">i2")]
)  # fmt: skip
_COPY_HEADER = 19
_NO_FAMILY = len(FAMILIES)
_REPLY_BIT = 8


def _activity_arrays(where: str, params: dict, as_of: dt.datetime):
    """The leads' activities in the lookback window, as numpy arrays (binary COPY)."""
    import io

    reply = _sql_list(REPLY_KINDS)
    sql = f"""
        COPY (
            SELECT a.lead_id, date_part('epoch', a.occurred_at),
                   (COALESCE({_family_case()}, {_NO_FAMILY})
                    + CASE WHEN a.kind IN ({reply}) THEN {_REPLY_BIT} ELSE 0 END)::int2
            FROM {LEAD} l JOIN {ACTIVITY} a ON a.lead_id = l.id
            WHERE {where}
              AND a.occurred_at <= %(as_of)s
              AND a.occurred_at > %(as_of)s - interval '{LOOKBACK_DAYS} days'
        ) TO STDOUT WITH (FORMAT binary)
    """
    buf = io.BytesIO()
    with connection.cursor() as cursor:
        query = cursor.cursor.mogrify(sql, {**params, "as_of": as_of}).decode()
        cursor.cursor.copy_expert(query, buf)
    body = buf.getbuffer()[_COPY_HEADER:-2]  # header, then the -1 trailer
    rows = np.frombuffer(body, dtype=_ROW)
    return (
        rows["lead"].astype(np.int64),
        rows["t"].astype(np.float64),
        rows["code"].astype(np.int16),
    )


# The real-time rescore asks for one lead (or a few): then the lead rows, their
# intervention history and their activities come back in one statement instead of three
# (two queries and a COPY), each lead's activities as two arrays.
SMALL_SET = 64

_INTERVENTION_COLUMNS = """
    COUNT(*) FILTER (WHERE e.outcome = 'started' AND e.occurred_at > %(as_of)s - interval '90 days'),
    COUNT(*) FILTER (WHERE e.outcome = 'no_response' AND e.occurred_at > %(as_of)s - interval '90 days'),
    COUNT(*) FILTER (WHERE e.outcome = 're_engaged' AND e.occurred_at > %(as_of)s - interval '90 days'),
    MIN(date_part('epoch', %(as_of)s - e.occurred_at) / 86400.0)
"""


def _lead_rows(where: str, params: dict, as_of: dt.datetime) -> tuple[list, list]:
    """The leads (id order) and, for those with any, their intervention history."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT l.id, l.pipeline_stage, l.source, l.assigned_agent_id,
                   date_part('epoch', COALESCE(l.crm_created_at, l.created_at))
            FROM {LEAD} l WHERE {where} ORDER BY l.id
            """,
            params,
        )
        leads = cursor.fetchall()
        cursor.execute(
            f"""
            SELECT e.lead_id, {_INTERVENTION_COLUMNS}
            FROM {LEAD} l JOIN {INTERVENTION} e ON e.lead_id = l.id
            WHERE {where} AND e.occurred_at <= %(as_of)s
            GROUP BY e.lead_id
            """,
            {**params, "as_of": as_of},
        )
        interventions = cursor.fetchall()
    return leads, interventions


def _few_leads_rows(where: str, params: dict, as_of: dt.datetime) -> tuple[list, list, tuple]:
    """`_lead_rows` and `_activity_arrays` for a few leads, in one statement."""
    reply = _sql_list(REPLY_KINDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT l.id, l.pipeline_stage, l.source, l.assigned_agent_id,
                   date_part('epoch', COALESCE(l.crm_created_at, l.created_at)),
                   iv.events, iv.started, iv.no_response, iv.re_engaged, iv.days_since,
                   act.t, act.code
            FROM {LEAD} l
            CROSS JOIN LATERAL (
                SELECT COUNT(*) AS events, {_INTERVENTION_COLUMNS}
                FROM {INTERVENTION} e WHERE e.lead_id = l.id AND e.occurred_at <= %(as_of)s
            ) AS iv (events, started, no_response, re_engaged, days_since)
            CROSS JOIN LATERAL (
                SELECT array_agg(date_part('epoch', a.occurred_at)),
                       array_agg(COALESCE({_family_case()}, {_NO_FAMILY})
                                 + CASE WHEN a.kind IN ({reply}) THEN {_REPLY_BIT} ELSE 0 END)
                FROM {ACTIVITY} a
                WHERE a.lead_id = l.id
                  AND a.occurred_at <= %(as_of)s
                  AND a.occurred_at > %(as_of)s - interval '{LOOKBACK_DAYS} days'
            ) AS act (t, code)
            WHERE {where} ORDER BY l.id
            """,
            {**params, "as_of": as_of},
        )
        rows = cursor.fetchall()
    leads = [r[:5] for r in rows]
    interventions = [(r[0], *r[6:10]) for r in rows if r[5]]
    lead = np.array([r[0] for r in rows for _ in r[10] or ()], dtype=np.int64)
    t = np.array([x for r in rows for x in r[10] or ()], dtype=np.float64)
    code = np.array([x for r in rows for x in r[11] or ()], dtype=np.int16)
    return leads, interventions, (lead, t, code)


def lead_features(
    *,
    tenant_id: int,
    as_of: dt.datetime,
    lead_ids: Sequence[int] | None = None,
    id_range: tuple[int, int] | None = None,
    only_active: bool = False,
    agent_response_hours: dict[str, float] | None = None,
) -> RawFeatures:
    """Features of a set of leads as of an instant. Pass `lead_ids` or an inclusive
    `id_range` (batch chunks); `only_active` skips lost, converted and deleted.

    The database sends each activity of the window once (binary COPY of three fixed-width
    columns off the `(lead_id, occurred_at) INCLUDE (kind)` index) and numpy aggregates
    them: the same features as `lead_features_sql`, which spent ~90 % of its time in
    ~45 filtered aggregates per activity rather than in reading them."""
    where, params = _lead_where(lead_ids, id_range, only_active)
    params["tenant"] = tenant_id
    if lead_ids is not None and id_range is None and len(lead_ids) <= SMALL_SET:
        leads, interventions, activity = _few_leads_rows(where, params, as_of)
    else:
        leads, interventions = _lead_rows(where, params, as_of)
        activity = None
    n = len(leads)
    ids = np.array([r[0] for r in leads], dtype=np.int64)
    raw = np.full((n, len(RAW_COLUMNS)), np.nan)
    col = {name: i for i, name in enumerate(RAW_COLUMNS)}
    as_of_s = as_of.timestamp()
    born = np.array([r[4] for r in leads], dtype=np.float64)
    if n:
        lead, t, code = activity if activity is not None else _activity_arrays(where, params, as_of)
        _activity_features(raw, col, ids, lead, t, code, as_of_s, born)
    if interventions:
        pos = np.searchsorted(ids, [r[0] for r in interventions])
        values = np.array([r[1:] for r in interventions], dtype=np.float64)
        for j, name in enumerate(
            (
                "interventions_90d",
                "interventions_no_response_90d",
                "interventions_re_engaged_90d",
                "days_since_intervention",
            )
        ):
            raw[pos, col[name]] = values[:, j]
    return RawFeatures.from_arrays(
        lead_ids=ids,
        stages=[r[1] or "" for r in leads],
        sources=[r[2] or "" for r in leads],
        agent_ids=[r[3] for r in leads],
        raw=raw,
        agent_response_hours=agent_response_hours,
    )


def _activity_features(raw, col, ids, lead, t, code, as_of_s, born) -> None:
    """Fill `raw` (one row per lead in `ids`) from the window's activities, as the
    reference SQL does: counts and recencies are NULL (NaN) for a lead with no activity
    in the window, unanswered/latency NULL for a lead with no outbound touch."""
    n = len(ids)
    # Leads in id order, each lead's activities in time order; at the same instant a
    # reply sorts after a touch and so answers it (the SQL leaves such peers unordered).
    order = np.lexsort((code & _REPLY_BIT, t, lead))
    lead, t, code = lead[order], t[order], code[order]
    li = np.searchsorted(ids, lead)
    age = (as_of_s - t) / 86400.0
    fam = (code & 7).astype(np.int64)
    reply = (code & _REPLY_BIT) != 0
    nf = len(FAMILIES)
    outbound = FAMILIES.index("outbound")
    inbound = fam < nf
    inbound &= fam != outbound
    seen = np.bincount(li, minlength=n) > 0

    def count(mask):
        return np.bincount(li[mask], minlength=n).astype(np.float64)

    def minimum(mask, values):
        out = np.full(n, np.inf)
        np.minimum.at(out, li[mask], values[mask])
        out[np.isinf(out)] = np.nan
        return out

    has = fam < nf
    key = li[has] * nf + fam[has]
    fam_age = age[has]
    recency = np.full(n * nf, np.inf)
    np.minimum.at(recency, key, fam_age)
    recency[np.isinf(recency)] = np.nan
    recency = recency.reshape(n, nf)
    for f, name in enumerate(FAMILIES):
        raw[:, col[f"days_since_{name}"]] = recency[:, f]
    for w in WINDOWS:
        within = fam_age <= w
        counts = np.bincount(key[within], minlength=n * nf).reshape(n, nf).astype(np.float64)
        for f, name in enumerate(FAMILIES):
            raw[:, col[f"n{w}_{name}"]] = np.where(seen, counts[:, f], np.nan)
    raw[:, col["days_since_inbound"]] = minimum(inbound, age)
    email_open = fam == FAMILIES.index("email_open")
    for name, mask in (
        ("inbound_last14", inbound & (age <= 14)),
        ("inbound_prev14", inbound & (age > 14) & (age <= 28)),
        ("inbound_baseline", inbound & (age > 14) & (age <= 90)),
        ("email_open_prev14", email_open & (age > 14) & (age <= 28)),
        ("inbound_30d", inbound & (age <= 30)),
        ("outbound_30d", (fam == outbound) & (age <= 30)),
    ):
        raw[:, col[name]] = np.where(seen, count(mask), np.nan)
    first_seen = minimum(np.ones(len(t), dtype=bool), t)
    start = np.fmin(born, first_seen)
    raw[:, col["lead_age_days"]] = (as_of_s - start) / 86400.0

    # Each outbound touch's next reply: the first reply row after it, same lead.
    is_out = fam == outbound
    out_rows = np.flatnonzero(is_out)
    reply_rows = np.flatnonzero(reply)
    nxt = np.searchsorted(reply_rows, out_rows, side="right")
    answered = nxt < len(reply_rows)
    nxt_row = reply_rows[np.minimum(nxt, max(len(reply_rows) - 1, 0))] if len(reply_rows) else nxt
    if len(reply_rows):
        answered &= li[nxt_row] == li[out_rows]
    else:
        answered[:] = False
    touched = np.bincount(li[out_rows], minlength=n) > 0
    unanswered = np.bincount(li[out_rows[~answered]], minlength=n).astype(np.float64)
    raw[:, col["unanswered_outbound"]] = np.where(touched, unanswered, np.nan)
    # Median latency (hours) of the answered touches of the last 90 days, per lead.
    ok = answered & (age[out_rows] <= 90)
    lat_lead = li[out_rows[ok]]
    lat = (t[nxt_row[ok]] - t[out_rows[ok]]) / 3600.0 if len(reply_rows) else np.zeros(0)
    median = np.full(n, np.nan)
    if len(lat):
        o = np.lexsort((lat, lat_lead))
        lat_lead, lat = lat_lead[o], lat[o]
        starts = np.flatnonzero(np.r_[True, lat_lead[1:] != lat_lead[:-1]])
        sizes = np.diff(np.r_[starts, len(lat)])
        lo = starts + (sizes - 1) // 2
        hi = starts + sizes // 2
        median[lat_lead[starts]] = (lat[lo] + lat[hi]) / 2.0
    raw[:, col["median_reply_latency_hours"]] = median


def lead_features_sql(
    *,
    tenant_id: int,
    as_of: dt.datetime,
    lead_ids: Sequence[int] | None = None,
    id_range: tuple[int, int] | None = None,
    only_active: bool = False,
    agent_response_hours: dict[str, float] | None = None,
) -> RawFeatures:
    """`lead_features` computed entirely in one SQL query (the reference the vectorized
    version is checked against; same arguments, same result)."""
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
               date_part('epoch', s.next_touch - s.occurred_at) / 3600.0 AS hours
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


@dataclass(frozen=True)
class RiskHistoryEntry:
    """One point of a lead's risk history: a tier change (a `RiskAssessment`, with its id,
    previous tier and reasons) or a daily snapshot (a `RiskSnapshot`, which keeps neither:
    id and previous_tier are None, reasons empty)."""

    kind: str
    assessed_at: dt.datetime
    score: float
    tier: str
    model_version: str
    id: int | None = None
    previous_tier: str | None = None
    reasons: list = field(default_factory=list)


def lead_risk_history(*, lead: Lead, limit: int = 50) -> list[RiskHistoryEntry]:
    """The lead's tier changes and daily snapshots, newest first (each table read by its
    lead-first index, at most `limit` rows from each)."""
    changes = [
        RiskHistoryEntry(
            kind=a.kind,
            assessed_at=a.assessed_at,
            score=a.score,
            tier=a.tier,
            model_version=a.model_version,
            id=a.id,
            previous_tier=a.previous_tier,
            reasons=a.reasons,
        )
        for a in RiskAssessment.objects.filter(tenant_id=lead.tenant_id, lead=lead).order_by(
            "-assessed_at", "-id"
        )[:limit]
    ]
    snapshots = [
        RiskHistoryEntry(kind=AssessmentKind.DAILY, **row)
        for row in RiskSnapshot.objects.filter(tenant_id=lead.tenant_id, lead=lead)
        .order_by("-day")
        .values("assessed_at", "score", "tier", "model_version")[:limit]
    ]
    # Same instant (a tier change and the day's snapshot of one score): the change first.
    entries = sorted(
        changes + snapshots,
        key=lambda e: (e.assessed_at, e.kind == AssessmentKind.TIER_CHANGE),
        reverse=True,
    )
    return entries[:limit]


def tenant_get(*, tenant_id: int) -> Tenant:
    return Tenant.objects.get(pk=tenant_id)
