"""Benchmark: one engagement callback -> lifecycle event committed, server side.

The callback is the email open pixel (GET /t/o/<token>): it verifies the signed token,
locks the message, stores the provider event once, moves the status to opened, records
the lead's email_open activity (with its lead's clocks and rescore hint, a NOTIFY the
workers' relay picks up; no worker runs here, and a hint nobody listens for costs the
commit nothing more), appends the message_opened lifecycle event and, after commit,
publishes it to the tenant's group.

Measured in-process: the time around Django's test Client request, which runs the
project's whole handler (every middleware, the view, the commit and the on-commit
publishes) against the real PostgreSQL and Redis, without the HTTP server's own
parsing. Raw floor: one INSERT of a lifecycle event row + COMMIT, same connection.
"""

from __future__ import annotations

import time

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from interventions.services.policy import policy_ensure
from tests.bench.harness import BENCH, Stats, analyze_database, sized
from tests.load.scenario import activity_payloads, open_pixel_paths, sent_emails
from tracking.models import EventKind, TrackingEvent

pytestmark = [*BENCH, pytest.mark.django_db(transaction=True)]

TARGET_P99_MS = 5.0


def _floor_samples(tenant_id: int, n: int) -> list[float]:
    table = TrackingEvent._meta.db_table
    samples = []
    with connection.cursor() as cursor:
        for _ in range(n):
            t0 = time.perf_counter()
            cursor.execute("BEGIN")
            cursor.execute(
                f"INSERT INTO {table} (tenant_id, kind, channel, data, occurred_at)"
                " VALUES (%s, %s, '', '{}', %s)",
                [tenant_id, EventKind.MESSAGE_OPENED, timezone.now()],
            )
            cursor.execute("COMMIT")
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


def _of_open_interventions(tenant, messages) -> None:
    """Each lead one active intervention, and each message one of its lead's: what an
    open of a real intervention email does more (the intervention locked, engaged at
    its first open, and that transition logged and broadcast too)."""
    policy = policy_ensure(tenant=tenant)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO interventions_intervention (tenant_id, lead_id, episode, stage,
                policy_id, is_holdout, status, outcome, outcome_reason, tier_at_start,
                score_at_start, detected_at, planned_at, activated_at, window_ends_at)
            SELECT %(tenant)s, l.id, 1, 1, %(policy)s, false, 'active', '', '',
                   'early_warning', 0.5, now(), now(), now(), now() + interval '72 hours'
            FROM churnapp_lead l WHERE l.tenant_id = %(tenant)s
            """,
            {"tenant": tenant.id, "policy": policy.id},
        )
        cursor.execute(
            """
            UPDATE notifications_message m
               SET metadata = jsonb_build_object('intervention_id', i.id, 'step', 0)
              FROM interventions_intervention i
             WHERE i.lead_id = m.lead_id AND i.tenant_id = m.tenant_id
               AND m.id = ANY(%s::bigint[])
            """,
            [[m.pk for m in messages]],
        )


@pytest.mark.parametrize("of_intervention", [False, True], ids=["plain", "intervention"])
def test_open_pixel_to_committed_event(bench_results, tenant, of_intervention):
    n, warmup = sized(2_000, 40), sized(200, 10)
    activity_payloads(tenant=tenant, leads=sized(2_000, 50), activities=0, seed=21)
    messages = sent_emails(tenant=tenant, count=n + warmup, prefix="bench-open")
    if of_intervention:
        _of_open_interventions(tenant, messages)
    paths = open_pixel_paths(messages)
    analyze_database()
    client = Client()
    before = TrackingEvent.objects.filter(tenant=tenant, kind=EventKind.MESSAGE_OPENED).count()
    samples = []
    try:
        for k, path in enumerate(paths):
            t0 = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - t0) * 1000
            assert response.status_code == 200
            if k >= warmup:
                samples.append(elapsed)
        # every open committed its lifecycle event (and, of an intervention email, the
        # first open of each intervention its "engaged" transition)
        opened = TrackingEvent.objects.filter(tenant=tenant, kind=EventKind.MESSAGE_OPENED)
        assert opened.count() - before == n + warmup
        if of_intervention:
            engaged = TrackingEvent.objects.filter(tenant=tenant).exclude(
                kind=EventKind.MESSAGE_OPENED
            )
            assert engaged.count() == len({m.lead_id for m in messages})
        _floor_samples(tenant.id, warmup)  # warm-up
        floor_samples = _floor_samples(tenant.id, n)
    finally:
        with current_app.connection_for_write() as conn:
            for queue in settings.CELERY_QUEUE_NAMES:
                conn.default_channel.queue_purge(queue)
    stats, floor = Stats.of(samples), Stats.of(floor_samples)
    bench_results.record(
        benchmark="tracking write",
        work="open-pixel callback -> message_opened event committed (+ on-commit publish), "
        "in-process Django test Client, real PostgreSQL and Redis"
        + (
            "; each email of an active intervention (engaged at its first open)"
            if of_intervention
            else ""
        ),
        size=f"{n:,} callbacks" + (" of intervention emails" if of_intervention else ""),
        metric="p99 ms (server side)",
        value=stats.p99,
        spread=f"p50 {stats.p50:.2f} / p99 {stats.p99:.2f} / max {stats.max:.1f}",
        floor=floor.p99,
        floor_work=f"one INSERT+COMMIT, p99 (p50 {floor.p50:.2f})",
        ratio=stats.p99 / floor.p99,
        target=f"p99 <= {TARGET_P99_MS:g} ms server side",
        met=stats.p99 <= TARGET_P99_MS,
    )
