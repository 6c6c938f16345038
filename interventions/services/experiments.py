"""The randomized holdout and message-variant choice (Thompson sampling or fixed split)."""

from __future__ import annotations

import hashlib
import hmac
import random
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import F

from churnapp.models import Lead
from interventions.models import InterventionPolicy, LeadCohort, MessageVariant, VariantMode

COHORT = LeadCohort._meta.db_table


def lead_hash(*, tenant_id: int, lead_id: int) -> float:
    """A keyed hash of the lead, uniform in [0, 1): stable, and unguessable without the key."""
    key = settings.HOLDOUT_HASH_KEY.encode()
    digest = hmac.new(key, f"{tenant_id}:{lead_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cohort_assign(*, lead: Lead, policy: InterventionPolicy) -> LeadCohort:
    """The lead's experiment arm, assigned once and kept for the lead's life.

    One statement for a lead seen the first time (INSERT ... ON CONFLICT DO NOTHING, no
    savepoint: a concurrent or earlier assignment is not an error), a second one only to
    read the arm that already stands."""
    cohort = cohort_new(lead=lead, policy=policy)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {COHORT} (tenant_id, lead_id, is_holdout, holdout_percent, hash_value,
                                  assigned_at)
            VALUES (%s, %s, %s, %s, %s, now())
            ON CONFLICT (lead_id) DO NOTHING
            RETURNING id, assigned_at
            """,
            [lead.tenant_id, lead.id, cohort.is_holdout, cohort.holdout_percent, cohort.hash_value],
        )
        row = cursor.fetchone()
    if row is None:  # assigned before (or concurrently): the first one stands
        return LeadCohort.objects.get(lead=lead)
    cohort.id, cohort.assigned_at = row
    cohort._state.adding = False
    return cohort


def cohorts_standing(*, lead_ids: list[int]) -> dict[int, LeadCohort]:
    """The cohorts already assigned to these leads, by lead id (one read)."""
    return {c.lead_id: c for c in LeadCohort.objects.filter(lead_id__in=lead_ids)}


def cohort_new(*, lead: Lead, policy: InterventionPolicy) -> LeadCohort:
    """The arm `cohort_assign` would give a lead that has none yet (not saved)."""
    value = lead_hash(tenant_id=lead.tenant_id, lead_id=lead.id)
    percent = Decimal(policy.holdout_percent)
    return LeadCohort(
        tenant_id=lead.tenant_id,
        lead=lead,
        is_holdout=value < float(percent) / 100.0,
        holdout_percent=percent,
        hash_value=value,
    )


def cohorts_insert(*, cohorts: list[LeadCohort]) -> None:
    """Write new cohorts from `cohort_new` in one statement (they get id and assigned_at).

    The caller holds the leads' row locks, under which alone a cohort is assigned, so
    none can have appeared since it read `cohorts_standing`: a duplicate is an error
    (the unique lead key fails the transaction) rather than a second arm."""
    if not cohorts:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {COHORT} (tenant_id, lead_id, is_holdout, holdout_percent, hash_value,
                                  assigned_at)
            SELECT c.tenant_id, c.lead_id, c.is_holdout, c.holdout_percent, c.hash_value, now()
            FROM unnest(%s::bigint[], %s::bigint[], %s::bool[], %s::numeric[], %s::float8[])
                WITH ORDINALITY AS c(tenant_id, lead_id, is_holdout, holdout_percent,
                                     hash_value, n)
            ORDER BY c.n
            RETURNING lead_id, id, assigned_at
            """,
            [
                [c.tenant_id for c in cohorts],
                [c.lead_id for c in cohorts],
                [c.is_holdout for c in cohorts],
                [c.holdout_percent for c in cohorts],
                [c.hash_value for c in cohorts],
            ],
        )
        written = {lead_id: (pk, at) for lead_id, pk, at in cursor.fetchall()}
    for cohort in cohorts:
        cohort.id, cohort.assigned_at = written[cohort.lead_id]
        cohort._state.adding = False


def variants_active(*, tenant_id: int, stage: int) -> list[MessageVariant]:
    """The stage's active variants, the candidates of `variant_pick`."""
    return list(MessageVariant.objects.filter(tenant_id=tenant_id, stage=stage, is_active=True))


def variant_choose(
    *, policy: InterventionPolicy, stage: int, rng: random.Random
) -> MessageVariant | None:
    """Pick a variant for a stage among its active ones (see variant_pick)."""
    return variant_pick(
        policy=policy, variants=variants_active(tenant_id=policy.tenant_id, stage=stage), rng=rng
    )


def variant_pick(
    *, policy: InterventionPolicy, variants: list[MessageVariant], rng: random.Random
) -> MessageVariant | None:
    """Pick a variant for a stage.

    Thompson sampling draws a success rate for each active variant from its
    Beta(1 + successes, 1 + failures) posterior and takes the highest; with probability
    `exploration_floor` it picks uniformly instead, so a variant that started unlucky
    still gets traffic. The fixed mode splits by the manager's weights.
    """
    if not variants:
        return None
    if len(variants) == 1:
        return variants[0]
    if policy.variant_mode == VariantMode.FIXED:
        return rng.choices(variants, weights=[max(v.weight, 0) or 1 for v in variants])[0]
    if rng.random() < float(policy.exploration_floor):
        return rng.choice(variants)
    draws = [
        (rng.betavariate(1 + v.successes, 1 + v.trials - v.successes), v.key, v) for v in variants
    ]
    return max(draws, key=lambda d: (d[0], d[1]))[2]


def variant_record_result(*, variant_id: int, success: bool) -> None:
    MessageVariant.objects.filter(pk=variant_id).update(
        trials=F("trials") + 1, successes=F("successes") + (1 if success else 0)
    )
