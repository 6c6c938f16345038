"""Message variants (Thompson sampling with an exploration floor, fixed split), the
sticky holdout, and versioned policies."""

from __future__ import annotations

import random
from collections import Counter

from churnapp.factories import LeadFactory
from interventions.models import InterventionPolicy, MessageVariant, VariantMode
from interventions.services.experiments import cohort_assign, lead_hash, variant_choose
from interventions.services.policy import policy_publish


def _variants(tenant, **observed):
    for key, (trials, successes) in observed.items():
        MessageVariant.objects.update_or_create(
            tenant=tenant, stage=1, key=key, defaults={"trials": trials, "successes": successes}
        )


def test_thompson_sampling_favours_the_better_variant_but_keeps_exploring(tenant, policy):
    # given A at 20 % and B at 60 % observed success over 100 trials each
    _variants(tenant, A=(100, 20), B=(100, 60))
    rng = random.Random(7)
    # when choosing 2,000 times
    picks = Counter(variant_choose(policy=policy, stage=1, rng=rng).key for _ in range(2000))
    # then B wins almost always; A still gets about half the exploration floor (10 %)
    assert picks["B"] > picks["A"]
    assert 0.03 < picks["A"] / 2000 < 0.08


def test_fixed_split_follows_the_managers_weights(tenant, policy):
    _variants(tenant, A=(0, 0), B=(0, 0))
    MessageVariant.objects.filter(tenant=tenant, key="B").update(weight=3)
    policy.variant_mode = VariantMode.FIXED
    rng = random.Random(3)
    picks = Counter(variant_choose(policy=policy, stage=1, rng=rng).key for _ in range(4000))
    assert 0.70 < picks["B"] / 4000 < 0.80


def test_holdout_is_a_stable_share_and_sticky(tenant, policy):
    policy.holdout_percent = 10
    leads = LeadFactory.create_batch(400, tenant=tenant)
    arms = [cohort_assign(lead=lead, policy=policy).is_holdout for lead in leads]
    share = sum(arms) / len(arms)
    assert 0.06 < share < 0.14  # 10 % +- about 2 standard errors
    # a later policy change does not move anyone already assigned
    policy.holdout_percent = 90
    assert [cohort_assign(lead=lead, policy=policy).is_holdout for lead in leads] == arms
    assert lead_hash(tenant_id=tenant.id, lead_id=leads[0].id) == lead_hash(
        tenant_id=tenant.id, lead_id=leads[0].id
    )


def test_publishing_a_policy_keeps_the_old_version(tenant, policy):
    new = policy_publish(
        policy=policy, changes={"cap_per_day": 1}, stage_changes={1: {"response_window_hours": 24}}
    )
    old = InterventionPolicy.objects.get(pk=policy.pk)
    assert (old.is_active, new.is_active) == (False, True)
    assert new.version == old.version + 1 and new.cap_per_day == 1
    assert new.stages.get(stage=1).response_window_hours == 24
    assert old.stages.get(stage=1).response_window_hours == 72
    assert new.stages.count() == 3
