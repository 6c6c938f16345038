"""Benchmark: success and impact analytics over 1,000,000 interventions (make bench).

Rows are bulk-built in SQL with generate_series (not the ORM): 200,000 leads, 1,000,000
interventions over the last 365 days (10 % holdout), one message and one step per
treated intervention. The year is rolled up once, then the 30-day and 365-day reports
are timed (today, not rolled up, is read from the live tables as in production)."""

from __future__ import annotations

import datetime as dt
import statistics
import time

import pytest
from django.db import connection
from django.utils import timezone

from churnapp.models import Tenant
from interventions.models import MessageVariant
from interventions.services.policy import policy_ensure
from tracking.selectors import analytics_impact, analytics_success, period_resolve
from tracking.services.rollups import rollup_days

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

LEADS = 200_000
INTERVENTIONS = 1_000_000


def _sql(statement: str, params: dict | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})


def _build(tenant: Tenant) -> None:
    policy = policy_ensure(tenant=tenant)
    variants = {}
    for stage in (1, 2, 3):
        for key in ("A", "B"):
            variants[(stage, key)] = MessageVariant.objects.get_or_create(
                tenant=tenant, stage=stage, key=key
            )[0].id
    params = {"tenant": tenant.id, "policy": policy.id, "leads": LEADS, "n": INTERVENTIONS}
    _sql(
        """
        INSERT INTO churnapp_lead (tenant_id, external_id, first_name, last_name, email,
            phone, timezone, source, pipeline_stage, budget, status, consent_sms,
            consent_email, dnd, dnd_channels, tags, custom_fields, created_at, updated_at,
            risk_tier)
        SELECT %(tenant)s, 'bench-' || g, '', '', '', '', 'UTC',
               (ARRAY['zillow','realtor','referral','website','open_house'])[1 + g %% 5],
               (ARRAY['new','contacted','showing','offer'])[1 + (g / 5) %% 4],
               CASE WHEN g %% 7 = 0 THEN NULL ELSE 100000 + (g * 7919) %% 1500000 END,
               'active', true, true, false, '{}', '{}', '{}', now(), now(), 'low'
        FROM generate_series(1, %(leads)s) g
        """,
        params,
    )
    variant_sql = (
        "CASE s.stage "
        + " ".join(
            f"WHEN {stage} THEN CASE WHEN s.g % 2 = 0 THEN {variants[(stage, 'A')]} "
            f"ELSE {variants[(stage, 'B')]} END"
            for stage in (1, 2, 3)
        )
        + " END"
    ).replace("%", "%%")
    _sql(
        f"""
        WITH base AS (SELECT min(id) AS first FROM churnapp_lead WHERE tenant_id = %(tenant)s)
        INSERT INTO interventions_intervention (tenant_id, lead_id, episode, stage, policy_id,
            variant_id, is_holdout, status, outcome, outcome_reason, tier_at_start,
            score_at_start, detected_at, planned_at, activated_at, resolved_at, window_ends_at)
        SELECT %(tenant)s, base.first + s.g %% %(leads)s, s.g, s.stage, %(policy)s,
               CASE WHEN s.holdout THEN NULL ELSE {variant_sql} END,
               s.holdout, 'resolved',
               CASE WHEN s.r2 < s.p THEN 'churned'
                    WHEN s.r2 < s.p + 0.10 THEN 'no_response'
                    WHEN s.r2 < s.p + 0.25 THEN 'converted' ELSE 're_engaged' END,
               '', (ARRAY['early_warning','active_risk','critical'])[s.stage], 0.5,
               s.t0 - interval '5 minutes', s.t0, s.t0,
               s.t0 + (1 + s.r3 * 71) * interval '1 hour',
               s.t0 + interval '72 hours'
        FROM base, (
            SELECT *, CASE WHEN holdout THEN 0.35 ELSE 0.22 END AS p FROM (
                SELECT g, 1 + g %% 3 AS stage, random() < 0.1 AS holdout, random() AS r2,
                       random() AS r3, now() - random() * interval '365 days' AS t0
                FROM generate_series(1, %(n)s) g) raw
        ) s
        """,
        params,
    )
    _sql(
        """
        INSERT INTO notifications_message (tenant_id, lead_id, channel, template_key, variant,
            subject, body_text, body_html, links, to_address, idempotency_key, status,
            status_reason, attempts, max_attempts, claimed_by, provider, provider_message_id,
            cost, cost_currency, metadata, render_context, fallback_channels, created_at,
            updated_at, sent_at, delivered_at, opened_at, replied_at)
        SELECT i.tenant_id, i.lead_id,
               (ARRAY['email','sms','agent_alert'])[i.stage], '', '', '', '', '', '[]', '',
               'bench:' || i.id, 'delivered', '', 1, 5, '',
               (ARRAY['smtp','twilio','channels'])[i.stage], '',
               CASE WHEN i.stage = 2 THEN 0.0079 END, '',
               jsonb_build_object('intervention_id', i.id, 'step', 0), '{}', '{}',
               i.planned_at, i.planned_at, i.planned_at + interval '5 minutes',
               i.planned_at + interval '6 minutes',
               CASE WHEN i.id %% 3 = 0 THEN i.planned_at + interval '2 hours' END,
               CASE WHEN i.outcome = 're_engaged' THEN i.resolved_at END
        FROM interventions_intervention i
        WHERE i.tenant_id = %(tenant)s AND NOT i.is_holdout
        """,
        params,
    )
    _sql(
        """
        INSERT INTO interventions_interventionstep (intervention_id, position, channel,
            recipient, status, skip_reason, message_id, created_at)
        SELECT (m.metadata ->> 'intervention_id')::bigint, 0, m.channel, 'lead', 'requested',
               '', m.id, m.created_at
        FROM notifications_message m WHERE m.tenant_id = %(tenant)s
        """,
        params,
    )
    for table in (
        "churnapp_lead",
        "interventions_intervention",
        "interventions_interventionstep",
        "notifications_message",
    ):
        _sql(f"ANALYZE {table}")


def _time(fn, runs: int = 5) -> tuple[float, float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), max(timings)


def test_bench_analytics_over_a_million_interventions(transactional_db):
    # Committed rows (flushed with TRUNCATE after): a rollback of millions of rows would
    # first check every deferred foreign key.
    tenant = Tenant.objects.create(name="Bench Realty", slug="bench")
    started = time.perf_counter()
    _build(tenant)
    built = time.perf_counter() - started
    today = timezone.now().date()
    started = time.perf_counter()
    rollup_days(
        tenant_id=tenant.id,
        first_day=today - dt.timedelta(days=366),
        last_day=today - dt.timedelta(days=1),
    )
    rolled = time.perf_counter() - started
    _sql("ANALYZE tracking_interventiondailyrollup")
    _sql("ANALYZE tracking_interventiondailybreakdown")
    _sql("ANALYZE tracking_messagedailyrollup")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tracking_interventiondailyrollup WHERE tenant_id = %s",
            [tenant.id],
        )
        rollup_rows = cursor.fetchone()[0]

    print(f"\nbuilt 1,000,000 interventions in {built:.1f} s; rolled up 366 days in {rolled:.1f} s")
    print(f"intervention rollup rows: {rollup_rows}")
    results = {}
    for label, days in (("30 days", 30), ("365 days", 365)):
        period = period_resolve(date_from=today - dt.timedelta(days=days - 1), today=today)
        success = analytics_success(tenant=tenant, period=period)
        impact = analytics_impact(tenant=tenant, period=period)
        assert success["volume"]["started"] > 0 and impact["sufficient_data"] is True
        results[label] = (
            _time(lambda p=period: analytics_success(tenant=tenant, period=p)),
            _time(lambda p=period: analytics_impact(tenant=tenant, period=p)),
        )
        (s_med, s_max), (i_med, i_max) = results[label]
        print(
            f"{label}: success median {s_med * 1000:.0f} ms (max {s_max * 1000:.0f}); "
            f"impact median {i_med * 1000:.0f} ms (max {i_max * 1000:.0f}); "
            f"{success['volume']['started']} interventions started; absolute reduction "
            f"{impact['impact']['absolute_reduction']}"
        )
    # The planted effect is recovered: not saved = churned + no response, 0.35 + 0.10
    # in the holdout against 0.22 + 0.10 treated, an absolute reduction of 0.13.
    year = analytics_impact(
        tenant=tenant, period=period_resolve(date_from=today - dt.timedelta(days=364))
    )
    absolute = year["impact"]["absolute_reduction"]
    assert absolute["ci_low"] <= 0.13 <= absolute["ci_high"]
