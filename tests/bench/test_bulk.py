"""Benchmark: the simulator's bulk generator builds 1,000,000 leads / 30,000,000 activities
(issue 8: "in bulk, fast").

Timed: `bulk_generate` from the call to its commit, into an empty tenant of an empty
database (the benchmarks' case: with an empty activity table its secondary indexes are
built after the load). The raw floor, same run: the same rows, exported by the server
in COPY's binary format beforehand, COPYed into empty copies of the two tables without
indexes in one transaction: moving the bytes into the heap and nothing else (no drawing,
no encoding, no indexes, no lead clocks).
"""

from __future__ import annotations

import tempfile
import time

from django.db import connection

from churnapp.models import Lead, LeadActivity, Tenant
from simulator.bulk import bulk_generate
from tests.bench.harness import BENCH, sized

pytestmark = BENCH

LEADS = sized(1_000_000, 1_000)
ACTIVITIES = sized(30_000_000, 30_000)
SIZE = f"{LEADS:,} leads / {ACTIVITIES:,} activities"
TARGET = 100_000  # rows/s: 30M activities in about five minutes


def _columns(model) -> list[str]:
    return [f.column for f in model._meta.concrete_fields if not f.primary_key]


def _has_rows(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        return cursor.fetchone()[0]


def _floor_seconds(tenant_id: int) -> float:
    """Seconds to COPY the tenant's rows, pre-built in binary, into index-free copies."""
    tables = [
        (Lead._meta.db_table, _columns(Lead)),
        (LeadActivity._meta.db_table, _columns(LeadActivity)),
    ]
    files = []
    try:
        with connection.cursor() as cursor:
            for table, cols in tables:
                f = tempfile.TemporaryFile()
                cursor.cursor.copy_expert(
                    f"COPY (SELECT {', '.join(cols)} FROM {table} WHERE tenant_id = {tenant_id})"
                    " TO STDOUT WITH (FORMAT binary)",
                    f,
                )
                files.append(f)
                cursor.execute(
                    f"CREATE TABLE bench_floor_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY)"
                )
            for f in files:
                f.seek(0)
            t0 = time.perf_counter()
            cursor.execute("BEGIN")
            cursor.execute("SET LOCAL synchronous_commit TO off")
            for (table, cols), f in zip(tables, files, strict=True):
                cursor.cursor.copy_expert(
                    f"COPY bench_floor_{table} ({', '.join(cols)}) FROM STDIN WITH (FORMAT binary)",
                    f,
                    size=1 << 20,
                )
            cursor.execute("COMMIT")
            seconds = time.perf_counter() - t0
            for table, _ in tables:
                cursor.execute(f"DROP TABLE bench_floor_{table}")
            return seconds
    finally:
        for f in files:
            f.close()


def test_bulk_generator_rate(transactional_db, bench_results):
    # given: an empty database (the benchmarks build their data into one)
    tenant = Tenant.objects.create(name="Bench bulk", slug="bench-bulk")
    empty = not _has_rows(LeadActivity._meta.db_table)

    # when
    t0 = time.perf_counter()
    built = bulk_generate(tenant=tenant, leads=LEADS, activities=ACTIVITIES, seed=8)
    build_s = time.perf_counter() - t0

    # then: everything asked for is there, and the rate against the floor
    assert (built.leads, built.activities) == (LEADS, ACTIVITIES)
    assert Lead.objects.filter(tenant=tenant).count() == LEADS
    assert LeadActivity.objects.filter(tenant_id=tenant.id).count() == ACTIVITIES
    assert Lead.objects.filter(tenant=tenant, last_activity_at__isnull=False).exists()
    floor_s = _floor_seconds(tenant.id)
    rows = LEADS + ACTIVITIES
    value, floor = rows / build_s, rows / floor_s
    bench_results.record(
        benchmark="bulk generator (simulator)",
        work="simulate_bulk: draw, encode and COPY leads + activities, lead clocks, committed",
        size=SIZE,
        metric="rows/s",
        value=value,
        spread=f"{build_s:.1f} s in all; one run",
        floor=floor,
        floor_work=f"binary COPY of the same pre-built rows into index-free tables, {floor_s:.1f} s",
        ratio=floor / value,
        target=f">= {TARGET:,} rows/s",
        met=value >= TARGET,
        notes="issue 8; "
        + (
            "empty table: activity indexes built after the load"
            if empty
            else "table not empty: indexes maintained inline"
        ),
    )
