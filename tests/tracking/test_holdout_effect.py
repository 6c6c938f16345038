"""The holdout comparison recovers an effect planted in randomized data, and finds none
where none was planted."""

from __future__ import annotations

import datetime as dt
import random

from django.db.models import F

from churnapp.models import Lead
from interventions.models import Intervention, InterventionStatus
from tests.tracking.conftest import at
from tracking.selectors import analytics_impact, period_resolve

D = dt.date(2026, 2, 2)


def _plant(world, *, n_treated: int, n_holdout: int, churn_treated: float, churn_holdout: float):
    """Bulk-build single-stage episodes whose outcomes are drawn with the given churn
    probabilities (fixed seed), resolved on D+1."""
    rng = random.Random(20261125)
    tenant = world.tenant
    arms = [False] * n_treated + [True] * n_holdout
    leads = Lead.objects.bulk_create(
        Lead(tenant=tenant, external_id=f"planted-{i}", source="zillow") for i in range(len(arms))
    )
    resolved = at(D + dt.timedelta(days=1))
    Intervention.objects.bulk_create(
        Intervention(
            tenant=tenant,
            lead=lead,
            episode=1,
            stage=1,
            policy=world.policy,
            is_holdout=holdout,
            status=InterventionStatus.RESOLVED,
            outcome="churned"
            if rng.random() < (churn_holdout if holdout else churn_treated)
            else "re_engaged",
            tier_at_start="early_warning",
            detected_at=at(D),
            window_ends_at=resolved,
            resolved_at=resolved,
        )
        for lead, holdout in zip(leads, arms, strict=True)
    )
    Intervention.objects.filter(tenant=tenant).update(planned_at=F("detected_at"))


def test_a_planted_reduction_is_recovered(world, settings):
    # given churn of 35 % without treatment and 20 % with it: a true absolute
    # reduction of 0.15 and a relative one of 1 - 0.20/0.35 = 0.4286
    settings.TRACKING_MIN_ARM_SIZE = 30
    _plant(world, n_treated=1200, n_holdout=600, churn_treated=0.20, churn_holdout=0.35)
    # when
    report = analytics_impact(
        tenant=world.tenant,
        period=period_resolve(date_from=D, date_to=D + dt.timedelta(days=1)),
        now=at(D + dt.timedelta(days=5)),
    )
    # then each interval covers the truth and the absolute one excludes no effect
    absolute = report["impact"]["absolute_reduction"]
    relative = report["impact"]["relative_reduction"]
    assert absolute["ci_low"] <= 0.15 <= absolute["ci_high"]
    assert absolute["ci_low"] > 0
    assert relative["ci_low"] <= 0.4286 <= relative["ci_high"]
    assert abs(absolute["estimate"] - 0.15) < 0.05
    saves = report["impact"]["incremental_saves"]
    assert saves["ci_low"] <= 0.15 * 1200 <= saves["ci_high"]
    assert report["arms"]["treated"]["episodes"] == 1200
    assert report["arms"]["holdout"]["episodes"] == 600


def test_no_planted_effect_gives_an_interval_around_zero(world, settings):
    settings.TRACKING_MIN_ARM_SIZE = 30
    _plant(world, n_treated=1200, n_holdout=600, churn_treated=0.30, churn_holdout=0.30)
    report = analytics_impact(
        tenant=world.tenant,
        period=period_resolve(date_from=D, date_to=D + dt.timedelta(days=1)),
        now=at(D + dt.timedelta(days=5)),
    )
    absolute = report["impact"]["absolute_reduction"]
    assert absolute["ci_low"] < 0 < absolute["ci_high"]
    assert report["impact"]["relative_reduction"]["ci_low"] < 0
