"""Success analytics and business impact on fixed data, against hand-computed values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.tracking.conftest import at
from tracking.api.serializers import ImpactOut, SuccessOut
from tracking.selectors import analytics_impact, analytics_success, period_resolve
from tracking.services.rollups import rollup_days

D = dt.date(2026, 3, 2)
NOW = at(D + dt.timedelta(days=10))
PERIOD = period_resolve(date_from=D, date_to=D + dt.timedelta(days=2))


@pytest.fixture
def fixed(world):
    """Stage 1, treated: 100 resolved, 30 re-engaged + 15 converted (45 successes),
    45 no response, 10 churned; 60 by email (cost from the table, 0.0010 each) and 40 by
    SMS over Twilio that reported 0.05 each. Holdout: 40 resolved, 8 re-engaged, 32
    churned. Started on D at noon, resolved D+1 at noon."""
    outcomes = ["re_engaged"] * 30 + ["converted"] * 15 + ["no_response"] * 45 + ["churned"] * 10
    for i, outcome in enumerate(outcomes):
        sms = i % 5 in (1, 3)  # 40 of 100, spread over every outcome
        world.intervention(
            started=at(D),
            outcome=outcome,
            channel="sms" if sms else "email",
            provider="twilio" if sms else "smtp",
            cost=Decimal("0.05") if sms else None,
            budget=Decimal("300000") if i % 2 else None,
        )
    for outcome in ["re_engaged"] * 8 + ["churned"] * 32:
        world.intervention(started=at(D), outcome=outcome, is_holdout=True)
    return world


def test_success_rates_by_stage_against_the_target(fixed):
    report = analytics_success(tenant=fixed.tenant, period=PERIOD, now=NOW)
    stage1 = report["success"]["by_stage"][0]
    # 45/100: Wilson (0.35615, 0.54755), see test_stats; the policy's target is 45 %
    assert (stage1["stage"], stage1["n"], stage1["successes"]) == (1, 100, 45)
    assert stage1["rate"] == 0.45
    assert (stage1["ci_low"], stage1["ci_high"]) == (0.3561, 0.5476)
    assert stage1["target"] == 0.45
    # the control beside it: 8/40 = 0.2
    assert stage1["holdout"]["rate"] == 0.2 and stage1["holdout"]["n"] == 40
    assert report["targets"]["stage_success"] == {"1": 0.45, "2": 0.6, "3": 0.7}
    assert report["targets"]["churn_rate_goal"] == 0.2
    assert report["outcomes"] == {
        "re_engaged": 30,
        "converted": 15,
        "churned": 10,
        "no_response": 45,
        "unsubscribed": 0,
        "cancelled": 0,
    }
    assert report["volume"]["started_treated"] == 100
    assert report["volume"]["started_holdout"] == 40
    # by channel: 40 SMS, 60 email; successes split by i % 5 in (1, 3): of the 45
    # successes (i < 45) the SMS ones are i%5 in (1,3): 18 -> 18/40 and 27/60
    by_channel = {r["channel"]: r for r in report["success"]["by_channel"]}
    assert (by_channel["sms"]["successes"], by_channel["sms"]["n"]) == (18, 40)
    assert (by_channel["email"]["successes"], by_channel["email"]["n"]) == (27, 60)
    bands = {r["price_band"]: r for r in report["success"]["by_segment"]["price_band"]}
    # odd i have a 300k budget: 22 of the 45 successes (i = 1, 3, ..., 43)
    assert (bands["250k_500k"]["successes"], bands["250k_500k"]["n"]) == (22, 50)
    assert bands["unknown"]["holdout"]["n"] == 40
    SuccessOut(data=report).is_valid(raise_exception=True)


def test_funnel_latency_and_escalations(fixed):
    report = analytics_success(tenant=fixed.tenant, period=PERIOD, now=NOW)
    funnel = {r["channel"]: r for r in report["funnel"]}
    assert funnel["email"]["sent"] == 60 and funnel["email"]["delivered"] == 60
    assert funnel["sms"]["queued"] == 40 and funnel["sms"]["delivered_rate"] == 1.0
    # detected 5 min before the start, sent 10 min after: 900 s, bucket [900, 1800)
    first_send = report["latency_seconds"]["detection_to_first_send"]
    assert first_send["n"] == 100 and 900 <= first_send["p50"] <= 1800
    # delivered 1 min after sending: bucket [60, 300)
    assert 60 <= report["latency_seconds"]["send_to_delivered"]["p90"] <= 300
    # resolved a day after the start: bucket [86400, 172800)
    assert 86400 <= report["latency_seconds"]["start_to_resolution"]["p50"] <= 172800


def test_escalation_counts_and_times(world):
    iv = world.intervention(started=at(D), stage=3, outcome="re_engaged")
    world.escalation(
        iv,
        opened=at(D),
        acknowledged=at(D, 13),
        resolved=at(D, 15),
        breached=None,
    )
    late = world.intervention(started=at(D), stage=3)
    world.escalation(late, opened=at(D), breached=at(D, 16))
    report = analytics_success(tenant=world.tenant, period=PERIOD, now=NOW)
    esc = report["escalations"]
    assert (esc["opened"], esc["acknowledged"], esc["resolved"], esc["sla_breaches"]) == (
        2,
        1,
        1,
        1,
    )
    # acknowledged after 1 h: bucket [3600, 7200); resolved after 3 h: [10800, 14400)->
    # the edges are 2 h and 4 h, so [7200, 14400)
    assert 3600 <= esc["time_to_acknowledge_seconds"]["p50"] <= 7200
    assert 7200 <= esc["time_to_resolve_seconds"]["p50"] <= 14400
    assert report["now"]["open_escalations"] == 1
    assert report["now"]["active_interventions"] == 1


def test_impact_on_fixed_data_by_hand(fixed):
    report = analytics_impact(tenant=fixed.tenant, period=PERIOD, now=NOW)
    # every episode ended in stage 1. Treated: 100 ended, 45 saved -> 55 churned (0.55).
    # Holdout: 40 ended, 8 saved -> 32 churned (0.8).
    assert report["arms"]["treated"] == {
        "episodes": 100,
        "churned": 55,
        "churn_rate": 0.55,
        "ci_low": 0.4524,  # Wilson 55/100
        "ci_high": 0.6439,
    }
    assert report["arms"]["holdout"]["churn_rate"] == 0.8
    assert report["sufficient_data"] is True
    impact = report["impact"]
    # Absolute reduction 0.8 - 0.55 = 0.25. Wilson 32/40 = (0.65243, 0.89500),
    # 55/100 = (0.45245, 0.64385). Newcombe:
    # low = 0.25 - sqrt((0.8 - 0.65243)^2 + (0.64385 - 0.55)^2) = 0.25 - 0.17489 = 0.07511
    # high = 0.25 + sqrt((0.895 - 0.8)^2 + (0.55 - 0.45245)^2) = 0.25 + 0.13617 = 0.38617
    assert impact["absolute_reduction"] == {"estimate": 0.25, "ci_low": 0.0751, "ci_high": 0.3862}
    # RR = 0.55 / 0.8 = 0.6875; se = sqrt(1/55 - 1/100 + 1/32 - 1/40) = 0.120132;
    # exp(1.96 * 0.120132) = 1.265487 -> RR (0.54327, 0.87002) -> 1 - RR = 0.3125
    # (0.12998, 0.45673)
    assert impact["relative_reduction"] == {"estimate": 0.3125, "ci_low": 0.13, "ci_high": 0.4567}
    # saves = 0.25 x 100 = 25 (7.51, 38.62); revenue = 25 x 3000 = 75000
    assert impact["incremental_saves"] == {"estimate": 25.0, "ci_low": 7.51, "ci_high": 38.62}
    assert impact["revenue_protected"]["estimate"] == "75000.00"
    # cost: 60 emails x 0.0010 (table) + 40 SMS x 0.05 (reported) = 0.06 + 2.00 = 2.06
    assert report["cost"]["total"] == "2.0600"
    lines = {(c["channel"], c["provider"]): c for c in report["cost"]["by_channel_and_provider"]}
    assert lines[("sms", "twilio")]["cost_reported_by_provider"] == 40
    assert lines[("email", "smtp")]["cost_from_table"] == 60
    # per intervention 2.06 / 100 = 0.0206; per incremental save 2.06 / 25 = 0.0824
    assert report["cost"]["per_intervention"] == "0.0206"
    assert impact["cost_per_incremental_save"] == "0.0824"
    # ROI = (75000 - 2.06) / 2.06 = 36406.7670
    assert impact["roi"]["estimate"] == pytest.approx(36406.767, abs=1e-3)
    # the program ran from D 12:00 to the period's end (D+3 00:00): 2.5 days;
    # 25 saves x 365.25 / 2.5 = 3652.5 a year; revenue 75000 x 146.1 = 10957500
    assert report["period"]["effective_days"] == 2.5
    assert impact["annual"]["incremental_saves"] == 3652.5
    assert impact["annual"]["revenue_protected"] == "10957500.00"
    assert impact["annual"]["roi"] == impact["roi"]["estimate"]
    assert report["targets"] == {"churn_rate_before": 0.35, "churn_rate_goal": 0.2}
    ImpactOut(data=report).is_valid(raise_exception=True)


def test_too_few_leads_in_an_arm_prints_no_number(world, settings):
    settings.TRACKING_MIN_ARM_SIZE = 30
    for i in range(40):
        world.intervention(started=at(D), outcome="re_engaged" if i % 2 else "churned")
    for _ in range(29):
        world.intervention(started=at(D), outcome="churned", is_holdout=True)
    report = analytics_impact(tenant=world.tenant, period=PERIOD, now=NOW)
    assert report["sufficient_data"] is False
    assert report["impact"] is None
    assert "29 holdout" in report["message"] and "at least 30" in report["message"]
    # one more control episode and the report has numbers
    world.intervention(started=at(D), outcome="churned", is_holdout=True)
    assert analytics_impact(tenant=world.tenant, period=PERIOD, now=NOW)["impact"] is not None


def test_an_escalated_stage_is_not_an_ended_episode(world, settings):
    settings.TRACKING_MIN_ARM_SIZE = 1
    lead = world.lead()
    world.intervention(started=at(D), outcome="no_response", lead=lead, episode=1, stage=1)
    world.intervention(
        started=at(D + dt.timedelta(days=1)), outcome="converted", lead=lead, episode=1, stage=2
    )
    world.intervention(started=at(D), outcome="churned", is_holdout=True)
    report = analytics_impact(tenant=world.tenant, period=PERIOD, now=NOW)
    # two interventions, one episode, saved by its stage 2
    assert report["arms"]["treated"]["episodes"] == 1
    assert report["arms"]["treated"]["churned"] == 0


def test_rollups_and_live_tables_answer_alike(fixed):
    # given the answers from the live tables (no day rolled up yet)
    before_success = analytics_success(tenant=fixed.tenant, period=PERIOD, now=NOW)
    before_impact = analytics_impact(tenant=fixed.tenant, period=PERIOD, now=NOW)
    assert before_success["period"]["days_from_raw"] == 3
    # when the days are rolled up (twice: idempotent)
    rollup_days(tenant_id=fixed.tenant.id, first_day=PERIOD.first_day, last_day=PERIOD.last_day)
    counts = rollup_days(
        tenant_id=fixed.tenant.id, first_day=PERIOD.first_day, last_day=PERIOD.last_day
    )
    assert counts["interventions"] > 0
    after_success = analytics_success(tenant=fixed.tenant, period=PERIOD, now=NOW)
    after_impact = analytics_impact(tenant=fixed.tenant, period=PERIOD, now=NOW)
    # then the same numbers, now from rollups
    assert after_success["period"]["days_from_rollups"] == 3
    for report in (before_success, after_success, before_impact, after_impact):
        report.pop("period")
    assert after_success == before_success
    assert after_impact == before_impact


def test_a_period_mixing_rolled_and_live_days(world):
    world.intervention(started=at(D), outcome="re_engaged")
    world.intervention(started=at(D + dt.timedelta(days=1)), outcome="churned")
    rollup_days(tenant_id=world.tenant.id, first_day=D, last_day=D)
    report = analytics_success(tenant=world.tenant, period=PERIOD, now=NOW)
    assert (report["period"]["days_from_rollups"], report["period"]["days_from_raw"]) == (1, 2)
    assert report["success"]["overall"]["n"] == 2
    assert report["success"]["overall"]["successes"] == 1
