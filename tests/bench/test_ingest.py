"""Benchmark: activity ingest through the bulk API (1,000 per request, concurrent
clients) against a live daphne, as `manage.py up` serves it; raw floor: COPY of the
same rows into the same table in the same run.

The rows come from the simulator's bulk generator (its leads stay, its activities are
read back as API items). Every run starts from an empty activity table (DELETE +
VACUUM), so each run does the same work. No Celery worker runs: the rescoring that
inbound activity enqueues after commit is counted as the enqueue, not the scoring.
"""

from __future__ import annotations

import io
import os
import statistics

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection, transaction

from churnapp.models import Lead, LeadActivity
from churnapp.services.api_keys import api_key_create
from tests.bench.harness import BENCH, percentile, runs, sized
from tests.bench.stack import pyspy_record
from tests.live import LiveServer
from tests.load.driver import post_all
from tests.load.scenario import activity_payloads, batched

pytestmark = [*BENCH, pytest.mark.django_db(transaction=True)]

BATCH = 1000
CLIENTS = 4
TARGET = 20_000  # activities/s


def _empty(tenant_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {LeadActivity._meta.db_table} WHERE tenant_id = %s", [tenant_id]
        )
        cursor.execute(f"VACUUM ANALYZE {LeadActivity._meta.db_table}")


def _copy(tenant_id: int, items: list[dict], lead_ids: dict[str, int]) -> float:
    """The same rows by COPY in one transaction: seconds, commit included."""
    import time

    from churnapp.models import KIND_CHANNEL, KIND_DIRECTION

    buf = io.StringIO(
        "".join(
            f"{tenant_id}\t{lead_ids[i['lead_external_id']]}\t{i['kind']}\t"
            f"{KIND_DIRECTION[i['kind']]}\t{KIND_CHANNEL[i['kind']]}\t{i['occurred_at']}\t"
            f"{i['source_event_id']}\t\\N\t{{}}\tnow\n"
            for i in items
        )
    )
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {LeadActivity._meta.db_table} (tenant_id, lead_id, kind, direction, channel,"
            " occurred_at, source_event_id, value, payload, created_at) FROM STDIN",
            buf,
        )
    return time.perf_counter() - t0


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: the web tier's cost per activity
    barely moves with the machine's load, unlike its rate."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_bulk_activity_api_throughput(bench_results, tenant):
    n = sized(100_000, 2_000)
    items = activity_payloads(tenant=tenant, leads=sized(10_000, 200), activities=n, seed=11)
    batches = batched(items, BATCH)
    lead_ids = dict(Lead.objects.filter(tenant=tenant).values_list("external_id", "id"))
    _, api_key = api_key_create(tenant=tenant, name="bench")
    api_rates, copy_rates, latencies, web_cpu = [], [], [], []
    server = LiveServer(heartbeat_seconds=15).start()
    try:
        # warm-up: a tenth of the batches, then the table is emptied again
        post_all(
            base_url=server.url,
            api_key=api_key,
            batches=batches[: max(1, len(batches) // 10)],
            concurrency=CLIENTS,
        )
        for run in range(runs(3)):
            _empty(tenant.id)
            profiling = pyspy_record(server.process.pid, "ingest-web", 10) if run == 0 else None
            cpu_before = _cpu_seconds(server.process.pid)
            seconds, answers = post_all(
                base_url=server.url, api_key=api_key, batches=batches, concurrency=CLIENTS
            )
            failed = [a for a in answers if a.status != 201]
            assert not failed, failed[:3]
            assert LeadActivity.objects.filter(tenant=tenant).count() == n
            api_rates.append(n / seconds)
            web_cpu.append((_cpu_seconds(server.process.pid) - cpu_before) / n * 1e6)
            if profiling is not None:
                profiling.wait()
            latencies += [a.seconds * 1000 for a in answers]
            _empty(tenant.id)
            copy_rates.append(n / _copy(tenant.id, items, lead_ids))
    finally:
        server.stop()
        with current_app.connection_for_write() as conn:
            for queue in settings.CELERY_QUEUE_NAMES:
                conn.default_channel.queue_purge(queue)
    value, floor = statistics.median(api_rates), statistics.median(copy_rates)
    bench_results.record(
        benchmark="ingest",
        work=f"bulk activity API, {BATCH} per request, {CLIENTS} concurrent clients, live daphne",
        size=f"{n:,} activities x {len(api_rates)} runs",
        metric="activities/s (median)",
        value=value,
        spread=f"min {min(api_rates):,.0f} / max {max(api_rates):,.0f}; request p50 "
        f"{percentile(latencies, 50):.0f} ms / p99 {percentile(latencies, 99):.0f} ms; "
        f"web process CPU {statistics.median(web_cpu):.0f} us per activity",
        floor=floor,
        floor_work="COPY of the same rows, one transaction",
        ratio=floor / value,
        target=f">= {TARGET:,} activities/s",
        met=value >= TARGET,
    )
