"""End to end: the world drives the real pipeline on a simulated clock, and what the system
measures agrees with what the world knows is true.

Why this is sound and not flaky: with reset sequences, a fixed HOLDOUT_HASH_KEY and the
in-process ClockWorker (fixed queue order, frozen clock), the run is a deterministic function
of the seed, so the assertions are about one fixed draw. The truth for each intervention is
the world's exact success probability (a dynamic program over its own hourly rules, itself
checked against the world's behaviour in test_world.py), so "within sampling error" is a
z-score with the exact Poisson-binomial variance: |z| < 3.5 has a chance of about 1 in 2000
per check of failing for a correct system. The 95% interval covering the true lift holds in
about 95% of seeds; the calibration test (slow) checks that rate over many seeds.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from simulator.analysis import report_build
from simulator.harness import SimConfig, Simulation
from simulator.report import report_write
from simulator.world import WorldParams

# Faster lives than the defaults (shorter active spells), so a short run holds many
# at-risk episodes: more interventions per simulated day, same mechanics.
CI_PARAMS = WorldParams(
    dormancy_hazard=1 / (24 * 3), revival_hazard=1 / (24 * 8), initial_dormant_share=0.1
)


def _run(seed: int, leads: int, days: int, slug: str) -> Simulation:
    config = SimConfig(
        leads=leads,
        days=days,
        seed=seed,
        tenant_slug=slug,
        holdout_percent=Decimal("50"),
        history_days=10,
        params=CI_PARAMS,
    )
    return Simulation(config).run()


@pytest.fixture
def sim_settings(settings):
    settings.HOLDOUT_HASH_KEY = "simulator-tests"
    return settings


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_measured_impact_agrees_with_the_worlds_truth(sim_settings, tmp_path):
    sim = _run(seed=7, leads=120, days=10, slug="ci-sim")
    report = report_build(sim)

    # Everything went through the front doors without a refusal or a failed task.
    assert report.errors == []
    v = report.volumes
    assert v["activities_posted"] > 300 and v["webhooks_posted"] > 30
    assert v["deliveries_seen_by_world"] > 30 and v["tracking_hits"] > 0
    assert v["world_answers"] > 10

    # Stage 1 is the randomized comparison (both arms enter it the same way): its 95%
    # interval of the measured lift covers the world's true lift.
    stage1 = report.stages[1]
    assert stage1.treated.n >= 8 and stage1.holdout.n >= 8
    d, lo, hi = stage1.lift
    assert lo <= stage1.true_lift <= hi, (d, lo, hi, stage1.true_lift)
    assert stage1.true_lift > 0.05
    # The strong stage-3 agent call is detected: its interval lies above zero.
    stage3 = report.stages[3]
    assert stage3.true_lift > 0.2 and stage3.lift[1] > 0
    # Every stage's success rates sit within sampling error of the true rates.
    for stage in report.stages.values():
        for arm in (stage.treated, stage.holdout):
            if arm.n >= 10:
                assert abs(arm.z) < 3.5, (stage.stage, arm)

    path = report_write(report, tmp_path)
    text = path.read_text()
    assert "Measured" in text or "measured" in text
    assert (tmp_path / "stage_success.png").stat().st_size > 1000
    assert (tmp_path / "lift.png").exists() and (tmp_path / "churn.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_intervals_cover_the_truth_at_their_nominal_rate(sim_settings):
    """Calibration over seeds: the 95% intervals of every stage's lift cover the true
    lift about 95% of the time (at least 80% of 30 intervals, a bound a calibrated
    interval breaks with probability < 1%), and the z-scores look standard."""
    covered, total, zs = 0, 0, []
    for seed in range(10):
        sim = _run(seed=100 + seed, leads=100, days=10, slug=f"cal-{seed}")
        report = report_build(sim)
        for stage in report.stages.values():
            if stage.treated.n >= 10 and stage.holdout.n >= 10:
                total += 1
                covered += int(stage.covers)
            for arm in (stage.treated, stage.holdout):
                if arm.n >= 10:
                    zs.append(arm.z)
    mean = sum(zs) / len(zs)
    sd = math.sqrt(sum((z - mean) ** 2 for z in zs) / len(zs))
    print(
        f"\ncalibration: {covered}/{total} lift intervals cover the true lift; "
        f"success-rate z over {len(zs)} arms: mean {mean:+.3f}, sd {sd:.3f}"
    )
    assert total >= 20
    assert covered / total >= 0.8, (covered, total)
    assert abs(mean) < 0.5 and 0.6 < sd < 1.5, (mean, sd)
