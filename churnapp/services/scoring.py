"""Scoring: features -> one vectorized predict -> bulk update of leads, daily snapshots,
tier-change assessments, and one `risk_assessed_many` for the write's tier changes; batch
runs and real time."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from churnapp import risk_selectors
from churnapp.ml.features import RawFeatures, vectorize
from churnapp.ml.model import Scorer, scores_with_reasons
from churnapp.models import (
    AssessmentKind,
    Lead,
    RiskAssessment,
    RiskSnapshot,
    ScoringChunk,
    ScoringChunkStatus,
    ScoringRun,
    Tenant,
)
from churnapp.services.model_registry import scorer_for_tenant
from churnapp.signals import risk_assessed_many

logger = logging.getLogger(__name__)

CHUNK_SIZE = 5000
# A chunk claimed longer ago than this is presumed lost with its worker and may be
# claimed again; well above the time one chunk takes.
STALE_CLAIM = dt.timedelta(minutes=15)
AGENT_HOURS_TTL = 300.0
AGENT_HOURS_COMPUTED_TTL = 3600.0

LEAD = Lead._meta.db_table
ASSESSMENT = RiskAssessment._meta.db_table
SNAPSHOT = RiskSnapshot._meta.db_table

_agent_hours_cache: dict[int, tuple[float, dict[str, float]]] = {}


@dataclass
class ScoredLeads:
    lead_ids: np.ndarray
    scores: np.ndarray
    tiers: list[str]
    reasons: list[list[dict]]
    model_version: str
    as_of: dt.datetime
    X: np.ndarray


@dataclass
class AppliedScores:
    scored: int
    tier_changes: int
    assessment_ids: list[int]


def scores_compute(
    *, scorer: Scorer, raw: RawFeatures, thresholds, as_of: dt.datetime
) -> ScoredLeads:
    """Pure computation: the matrix, one predict_proba call, tiers and reasons."""
    X = vectorize(raw, scorer.spec)
    p, reasons = scores_with_reasons(scorer, X)
    if len(p) and not np.all(np.isfinite(p)):
        raise ValueError(f"{scorer.version} produced non-finite scores")
    return ScoredLeads(
        lead_ids=raw.lead_ids,
        scores=p,
        tiers=risk_selectors.tiers_for_scores(p, thresholds),
        reasons=reasons,
        model_version=scorer.version,
        as_of=as_of,
        X=X,
    )


def leads_score(
    *,
    tenant_id: int,
    as_of: dt.datetime,
    lead_ids: list[int] | None = None,
    id_range: tuple[int, int] | None = None,
    only_active: bool = True,
    agent_response_hours: dict[str, float] | None = None,
    scorer: Scorer | None = None,
) -> ScoredLeads:
    """Score leads as of an instant without writing anything (reports, the CLI)."""
    scorer = scorer or scorer_for_tenant(tenant_id=tenant_id)
    if agent_response_hours is None:
        agent_response_hours = _agent_hours(tenant_id=tenant_id, as_of=as_of)
    raw = risk_selectors.lead_features(
        tenant_id=tenant_id,
        as_of=as_of,
        lead_ids=lead_ids,
        id_range=id_range,
        only_active=only_active,
        agent_response_hours=agent_response_hours,
    )
    thresholds = risk_selectors.tenant_thresholds(tenant_id=tenant_id)
    return scores_compute(scorer=scorer, raw=raw, thresholds=thresholds, as_of=as_of)


def _agent_hours(*, tenant_id: int, as_of: dt.datetime, fresh: bool = False) -> dict[str, float]:
    """Agent responsiveness changes slowly and costs a tenant-wide scan, so the real-time
    path reuses the latest batch run's figures (computed once per hourly run); only a
    tenant that never had a run computes them here, cached for minutes."""
    if not fresh:
        cached = _agent_hours_cache.get(tenant_id)
        if cached and time.monotonic() < cached[0]:
            return cached[1]
        last = (
            ScoringRun.objects.filter(tenant_id=tenant_id, as_of__lte=as_of)
            .order_by("-slot")
            .values_list("agent_response_hours", "as_of")
            .first()
        )
        if last:  # from the past, so no leak; at most a run old
            _agent_hours_cache[tenant_id] = (time.monotonic() + AGENT_HOURS_TTL, last[0])
            return last[0]
    # Computed here (a tenant without a run yet): a tenant-wide scan that takes seconds
    # on a large tenant, so kept as long as a run's figures would be (the next hourly
    # run replaces it) rather than paid again by a real-time rescore every few minutes.
    hours = risk_selectors.agent_response_hours(tenant_id=tenant_id, as_of=as_of)
    _agent_hours_cache[tenant_id] = (time.monotonic() + AGENT_HOURS_COMPUTED_TTL, hours)
    return hours


@transaction.atomic
def scores_apply(
    *, tenant_id: int, scored: ScoredLeads, run: ScoringRun | None = None
) -> AppliedScores:
    """Write scores in bulk: one statement updates the leads (rows locked in id order),
    writes the daily snapshot of each lead not yet scored that day (at most one per lead
    per day) and returns each lead's previous tier; one INSERT of the tier-change
    assessments; then one `risk_assessed_many` with every change, so that the apps above
    handle a chunk's changes together. A score older than the lead's current one is not
    written (batch vs real time)."""
    if len(scored.lead_ids) == 0:
        return AppliedScores(0, 0, [])
    ids = scored.lead_ids.tolist()
    scores = scored.scores.tolist()
    as_of = scored.as_of
    day = timezone.localdate(as_of, dt.UTC)
    with connection.cursor() as cursor:
        # The snapshots are taken from the UPDATE's own rows: each one's lead exists, is
        # this tenant's and is locked by this transaction, which is why the snapshot
        # table carries no foreign-key constraints (their per-row checks were two thirds
        # of its insert). A lead scored earlier today already has today's snapshot (every
        # score writes one if missing), so hourly runs after the first insert none; the
        # key (lead_id, day) keeps it so even if risk_scored_at was reset since.
        # The id range (a chunk's ids are one range) lets the planner read the chunk's
        # rows by index: without it, on a 100k-lead tenant it hash-joined two full scans
        # of the lead table per chunk (115 -> 43 ms per 5,000-lead chunk).
        # The columns travel as one array literal each and the reasons as one JSON
        # document (see _array_literal): as Python lists they were 20,000 constants of
        # an ARRAY[...] expression for the server to parse and plan, and 5,000 JSON
        # strings to encode and quote one by one.
        cursor.execute(
            f"""
            WITH v AS (
                SELECT u.id, u.score, u.tier, r.reasons
                FROM unnest(%(ids)s::bigint[], %(scores)s::float8[], %(tiers)s::text[])
                    WITH ORDINALITY AS u(id, score, tier, n)
                JOIN jsonb_array_elements(%(reasons)s::jsonb) WITH ORDINALITY AS r(reasons, n)
                    USING (n)
            ), old AS (
                SELECT l.id, l.risk_tier, l.risk_scored_at FROM {LEAD} l JOIN v ON v.id = l.id
                WHERE l.tenant_id = %(tenant)s AND l.id BETWEEN %(low)s AND %(high)s
                  AND (l.risk_scored_at IS NULL OR l.risk_scored_at <= %(as_of)s)
                ORDER BY l.id FOR UPDATE OF l
            ), updated AS (
                UPDATE {LEAD} l SET risk_score = v.score, risk_tier = v.tier,
                    risk_scored_at = %(as_of)s, risk_reasons = v.reasons,
                    risk_model_version = %(version)s
                FROM v JOIN old ON old.id = v.id
                WHERE l.id = v.id AND l.id BETWEEN %(low)s AND %(high)s
                RETURNING l.id, l.tenant_id, l.risk_score, l.risk_tier,
                          old.risk_tier AS previous_tier, old.risk_scored_at AS previous_at
            ), snapshots AS (
                INSERT INTO {SNAPSHOT} (lead_id, day, tenant_id, assessed_at, score, tier,
                                        model_version)
                SELECT u.id, %(day)s, u.tenant_id, %(as_of)s, u.risk_score, u.risk_tier,
                       %(version)s
                FROM updated u
                WHERE u.previous_at IS NULL OR u.previous_at < %(day_start)s
                ORDER BY u.id
                ON CONFLICT (lead_id, day) DO NOTHING
            )
            SELECT id, previous_tier FROM updated
            """,
            {
                "ids": _array_literal(ids),
                "scores": _array_literal(scores),
                "tiers": _array_literal(scored.tiers),
                "tenant": tenant_id,
                "as_of": as_of,
                "reasons": json.dumps(scored.reasons),
                "version": scored.model_version,
                "day": day,
                "day_start": dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC),
                "low": min(ids),
                "high": max(ids),
            },
        )
        previous = dict(cursor.fetchall())
        position = {lead_id: i for i, lead_id in enumerate(ids)}
        changed = [
            lead_id for lead_id, old in previous.items() if old != scored.tiers[position[lead_id]]
        ]
        changed.sort()
        assessment_ids: list[int] = []
        if changed:
            idx = [position[c] for c in changed]
            cursor.execute(
                f"""
                INSERT INTO {ASSESSMENT} (tenant_id, lead_id, kind, assessed_at, day, score, tier,
                    previous_tier, model_version, reasons, run_id)
                SELECT %(tenant)s, v.id, %(kind)s, %(as_of)s, %(day)s, v.score, v.tier, v.prev,
                       %(version)s, v.reasons::jsonb, %(run)s
                FROM unnest(%(ids)s::bigint[], %(scores)s::float8[], %(tiers)s::text[],
                            %(prev)s::text[], %(reasons)s::text[])
                    AS v(id, score, tier, prev, reasons)
                ORDER BY v.id
                RETURNING id, lead_id
                """,
                {
                    "tenant": tenant_id,
                    "as_of": as_of,
                    "day": day,
                    "version": scored.model_version,
                    "run": run.pk if run else None,
                    "kind": AssessmentKind.TIER_CHANGE,
                    "ids": changed,
                    "scores": [scores[i] for i in idx],
                    "tiers": [scored.tiers[i] for i in idx],
                    "prev": [previous[c] for c in changed],
                    "reasons": [json.dumps(scored.reasons[i]) for i in idx],
                },
            )
            by_lead = {lead_id: pk for pk, lead_id in cursor.fetchall()}
            assessment_ids = [by_lead[c] for c in changed]
        if not changed:
            # Nothing a receiver acts on was written: a score lost to a crash in the next
            # few milliseconds is recomputed by the next run, so skip the WAL flush wait.
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
    if changed:
        risk_assessed_many.send(
            sender=RiskAssessment,
            tenant_id=tenant_id,
            changes=[
                {
                    "lead_id": lead_id,
                    "assessment_id": assessment_id,
                    "previous_tier": previous[lead_id],
                    "new_tier": scored.tiers[position[lead_id]],
                    "score": scores[position[lead_id]],
                    "model_version": scored.model_version,
                    "reasons": scored.reasons[position[lead_id]],
                }
                for lead_id, assessment_id in zip(changed, assessment_ids, strict=True)
            ],
        )
    return AppliedScores(len(previous), len(changed), assessment_ids)


def _array_literal(values: list) -> str:
    """A PostgreSQL array literal of numbers or tier names (one string parameter).

    Floats are written with repr, which round-trips exactly (as psycopg2 writes them);
    the tier names are quoted whole (they hold no quote or backslash)."""
    if values and isinstance(values[0], str):
        return "{" + ",".join(f'"{v}"' for v in values) + "}"
    return "{" + ",".join(map(repr, values)) + "}"


def leads_rescore(
    *, tenant_id: int, lead_ids: list[int], as_of: dt.datetime | None = None
) -> AppliedScores:
    """Real-time rescore of a few leads: one feature query, one predict, one write."""
    as_of = as_of or timezone.now()
    scored = leads_score(tenant_id=tenant_id, as_of=as_of, lead_ids=lead_ids)
    return scores_apply(tenant_id=tenant_id, scored=scored)


# --- Batch runs -------------------------------------------------------------------------


def slot_for(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def scoring_run_start(
    *, tenant_id: int, slot: dt.datetime, chunk_size: int = CHUNK_SIZE
) -> tuple[ScoringRun, bool]:
    """Create the run for (tenant, slot) and its chunks, once. A second call for the same
    slot returns the existing run and `False`: the caller enqueues nothing. A model that
    cannot be loaded fails the run before it exists (and is recorded on the model)."""
    # Loaded outside the transaction, so a refused artifact's load_error is kept.
    scorer = scorer_for_tenant(tenant_id=tenant_id)
    return _scoring_run_create(
        tenant_id=tenant_id, slot=slot, chunk_size=chunk_size, model_version=scorer.version
    )


@transaction.atomic
def _scoring_run_create(
    *, tenant_id: int, slot: dt.datetime, chunk_size: int, model_version: str
) -> tuple[ScoringRun, bool]:
    as_of = timezone.now()
    run, created = ScoringRun.objects.get_or_create(
        tenant_id=tenant_id,
        slot=slot,
        defaults={"as_of": as_of, "model_version": model_version},
    )
    if not created:
        return run, False
    run.agent_response_hours = risk_selectors.agent_response_hours(tenant_id=tenant_id, as_of=as_of)
    ids = risk_selectors.tenant_lead_ids(tenant_id=tenant_id, only_active=True)
    chunks = [
        ScoringChunk(run=run, index=i, first_lead_id=int(part[0]), last_lead_id=int(part[-1]))
        for i, part in enumerate(
            ids[start : start + chunk_size] for start in range(0, len(ids), chunk_size)
        )
    ]
    ScoringChunk.objects.bulk_create(chunks)
    run.chunks_total = len(chunks)
    if not chunks:
        run.finished_at = timezone.now()
    run.save(update_fields=["agent_response_hours", "chunks_total", "finished_at"])
    return run, True


def scoring_chunk_claim(*, chunk_id: int) -> bool:
    """Claim a pending chunk (or one whose claim went stale). False: someone has it."""
    now = timezone.now()
    return bool(
        ScoringChunk.objects.filter(pk=chunk_id)
        .filter(
            Q(status=ScoringChunkStatus.PENDING)
            | Q(status=ScoringChunkStatus.FAILED)
            | Q(status=ScoringChunkStatus.RUNNING, claimed_at__lt=now - STALE_CLAIM)
        )
        .update(status=ScoringChunkStatus.RUNNING, claimed_at=now)
    )


def scoring_chunk_process(*, chunk_id: int) -> AppliedScores | None:
    """Score one claimed chunk: one feature query, one predict, one bulk write. Returns
    None when another worker holds or finished the chunk (a repeated delivery)."""
    if not scoring_chunk_claim(chunk_id=chunk_id):
        return None
    chunk = ScoringChunk.objects.select_related("run").get(pk=chunk_id)
    run = chunk.run
    try:
        scored = leads_score(
            tenant_id=run.tenant_id,
            as_of=run.as_of,
            id_range=(chunk.first_lead_id, chunk.last_lead_id),
            agent_response_hours=run.agent_response_hours,
        )
        with transaction.atomic():
            applied = scores_apply(tenant_id=run.tenant_id, scored=scored, run=run)
            ScoringChunk.objects.filter(pk=chunk.pk).update(
                status=ScoringChunkStatus.DONE, done_at=timezone.now(), leads_scored=applied.scored
            )
            ScoringRun.objects.filter(pk=run.pk).update(
                chunks_done=F("chunks_done") + 1,
                leads_scored=F("leads_scored") + applied.scored,
                tier_changes=F("tier_changes") + applied.tier_changes,
            )
            ScoringRun.objects.filter(pk=run.pk, chunks_done=F("chunks_total")).update(
                finished_at=timezone.now()
            )
    except Exception as exc:
        ScoringChunk.objects.filter(pk=chunk.pk).update(
            status=ScoringChunkStatus.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        ScoringRun.objects.filter(pk=run.pk).update(error=f"chunk {chunk.index}: {exc}")
        raise
    return applied


def tenants_to_score() -> list[int]:
    return list(Tenant.objects.filter(is_active=True).order_by("id").values_list("id", flat=True))
