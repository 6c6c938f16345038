"""Scoring benchmark: builds a tenant of N leads / M activities with COPY, then measures
a full batch rescore, its raw floor (feature SQL alone, model call alone) and real-time
single-lead rescores. Not a test: it prints figures.

    DATABASE_URL=... python scripts/bench_scoring.py                 # 20k leads / 600k
    DATABASE_URL=... python scripts/bench_scoring.py --leads 1000000 --activities 30000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from churnapp import risk_selectors  # noqa: E402
from churnapp.ml.features import vectorize  # noqa: E402
from churnapp.ml.model import reasons_explain  # noqa: E402
from churnapp.models import (  # noqa: E402
    KIND_CHANNEL,
    KIND_DIRECTION,
    Agent,
    ChurnDefinition,
    Lead,
    LeadActivity,
    Tenant,
)
from churnapp.services.model_registry import scorer_for_tenant  # noqa: E402
from churnapp.services.scoring import (  # noqa: E402
    leads_rescore,
    scores_apply,
    scores_compute,
    scoring_chunk_process,
    scoring_run_start,
)
from churnapp.services.training import churn_model_train  # noqa: E402

KINDS = {
    "email_open": 0.26,
    "email_click": 0.06,
    "email_reply": 0.06,
    "sms_inbound": 0.07,
    "call_inbound": 0.02,
    "website_visit": 0.1,
    "property_view": 0.07,
    "form_submit": 0.01,
    "appointment_booked": 0.01,
    "showing_attended": 0.005,
    "appointment_cancelled": 0.005,
    "email_outbound": 0.18,
    "sms_outbound": 0.12,
    "call_outbound": 0.04,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build(slug: str, n_leads: int, n_activities: int, seed: int) -> Tenant:
    Tenant.objects.filter(slug=slug).delete()
    tenant = Tenant.objects.create(name=f"Bench {slug}", slug=slug)
    agents = Agent.objects.bulk_create([Agent(tenant=tenant, name=f"agent {i}") for i in range(50)])
    now = timezone.now()
    t0 = time.perf_counter()
    buf = io.StringIO()
    agent_ids = np.array([a.pk for a in agents])
    created = now - dt.timedelta(days=400)
    for i in range(n_leads):
        buf.write(
            f"{tenant.pk}\tb{i}\t\t\t\t\t\t{('zillow', 'realtor', 'website', 'referral')[i % 4]}\t"
            f"{('new', 'contacted', 'showing', 'offer')[(i // 4) % 4]}\tactive\tt\tt\tf\t{{}}\t{{}}\t{{}}\t"
            f"{created.isoformat()}\t{now.isoformat()}\t{now.isoformat()}\tunscored\t"
            f"{agent_ids[i % len(agent_ids)]}\n"
        )
    buf.seek(0)
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"""COPY {Lead._meta.db_table} (tenant_id, external_id, first_name, last_name, email,
                phone, timezone, source, pipeline_stage, status, consent_sms, consent_email, dnd,
                dnd_channels, tags, custom_fields, crm_created_at, created_at, updated_at,
                risk_tier, assigned_agent_id) FROM STDIN""",
            buf,
        )
    lead_ids = np.array(
        Lead.objects.filter(tenant=tenant).order_by("id").values_list("id", flat=True)
    )
    log(f"{n_leads} leads copied in {time.perf_counter() - t0:.1f}s")

    # Activities are generated inside PostgreSQL (INSERT ... SELECT generate_series), a
    # bulk path faster than COPY because no row crosses the wire. Each lead gets a
    # busyness (skewed: a few leads are very active) and a day it went quiet, so recency
    # and trends differ across leads as they do in life.
    lo, hi = int(lead_ids[0]), int(lead_ids[-1])
    assert hi - lo + 1 == n_leads, "bench leads must have contiguous ids"
    bag = []
    for kind, share in KINDS.items():
        bag += [kind] * max(1, round(share * 200))
    kinds_sql = "ARRAY[" + ",".join(f"'{k}'" for k in bag) + "]"
    direction_case = " ".join(f"WHEN '{k}' THEN '{KIND_DIRECTION[k]}'" for k in KINDS)
    channel_case = " ".join(f"WHEN '{k}' THEN '{KIND_CHANNEL[k]}'" for k in KINDS)
    batch = 2_000_000
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed / 1000.0])
        # Generated rows reference leads just created: skip the per-row FK trigger.
        cursor.execute("SET session_replication_role = replica")
        for start in range(0, n_activities, batch):
            n = min(batch, n_activities - start)
            cursor.execute(
                f"""
                INSERT INTO {LeadActivity._meta.db_table} (tenant_id, lead_id, kind, direction,
                    channel, occurred_at, source_event_id, value, payload, created_at)
                SELECT %(tenant)s, %(lo)s + x.idx, x.kind,
                       CASE x.kind {direction_case} END, CASE x.kind {channel_case} END,
                       %(now)s - make_interval(secs => 86400 * CASE
                           WHEN x.kind NOT LIKE '%%outbound' AND x.age < x.cold
                           THEN x.cold + random() * 30 ELSE x.age END),
                       'b' || x.g, NULL, '{{}}', %(now)s
                FROM (
                    SELECT g, idx, ({kinds_sql})[1 + floor(random() * {len(bag)})::int] AS kind,
                           random() * 365 AS age,
                           -60 * ln(1 - (abs(hashint4(idx)) %% 9973) / 9973.0) AS cold
                    FROM (
                        SELECT g, floor(%(n_leads)s * power(random(), 1.6))::int AS idx
                        FROM generate_series(%(first)s, %(last)s) AS g
                    ) s
                ) x
                """,
                {
                    "tenant": tenant.pk,
                    "lo": lo,
                    "now": now,
                    "n_leads": n_leads,
                    "first": start,
                    "last": start + n - 1,
                },
            )
            log(f"  {start + n} activities generated ({time.perf_counter() - t0:.0f}s)")
        cursor.execute("SET session_replication_role = DEFAULT")
    connection.close()
    # VACUUM sets the visibility map, so the feature SQL reads the index alone.
    with connections["default"].cursor() as cursor:
        t0 = time.perf_counter()
        cursor.execute(f"VACUUM ANALYZE {LeadActivity._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Lead._meta.db_table}")
        log(f"vacuum analyze {time.perf_counter() - t0:.1f}s")
    return tenant


def _process_chunk(chunk_id: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    applied = scoring_chunk_process(chunk_id=chunk_id)
    return (applied.scored if applied else 0), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--activities", type=int, default=600_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse the tenant if it exists")
    parser.add_argument("--realtime-samples", type=int, default=300)
    parser.add_argument("--e2e-samples", type=int, default=100)
    args = parser.parse_args()
    slug = f"bench-{args.leads}-{args.activities}"
    tenant = Tenant.objects.filter(slug=slug).first() if args.reuse else None
    if tenant is None:
        tenant = build(slug, args.leads, args.activities, args.seed)
    log(f"tenant {slug}: {Lead.objects.filter(tenant=tenant).count()} leads")

    # A real model for this tenant: monthly snapshots keep training short here.
    ChurnDefinition.objects.update_or_create(
        tenant=tenant,
        defaults={
            "snapshot_every_days": 30,
            "min_training_snapshots": 500,
            "max_training_leads": 20_000,
        },
    )
    if not tenant.churn_models.filter(status="active").exists():
        t0 = time.perf_counter()
        outcome = churn_model_train(tenant=tenant)
        log(f"trained in {time.perf_counter() - t0:.1f}s: {outcome.message}")
    scorer = scorer_for_tenant(tenant_id=tenant.pk)
    log(f"scorer {scorer.version}")

    # 1) Full batch rescore: one run, chunks over a process pool (= workers). Twice: the
    # first run of a day also writes every lead's daily snapshot (and, on a fresh
    # tenant, a tier change for every lead); later hourly runs write neither.
    for attempt in (1, 2):
        connections.close_all()
        t0 = time.perf_counter()
        # A fresh slot per benchmark run (the hourly slot would be taken by a repeat run).
        run, _ = scoring_run_start(tenant_id=tenant.pk, slot=timezone.now())
        chunk_ids = list(run.chunks.order_by("index").values_list("id", flat=True))
        start_s = time.perf_counter() - t0
        connections.close_all()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(_process_chunk, chunk_ids))
        full = time.perf_counter() - t0
        scored = sum(r[0] for r in results)
        chunk_times = [r[1] for r in results]
        run.refresh_from_db()
        log(
            f"FULL RESCORE run {attempt}: {scored} leads in {full:.1f}s wall with "
            f"{args.workers} workers ({run.tier_changes} tier changes; run start incl. agent "
            f"stats {start_s:.1f}s; {len(chunk_ids)} chunks, chunk p50 "
            f"{statistics.median(chunk_times):.2f}s, sum {sum(chunk_times):.1f}s)"
        )

    # 2) The raw floor, same chunks, one process: feature SQL alone; model call alone.
    thresholds = risk_selectors.tenant_thresholds(tenant_id=tenant.pk)
    hours = run.agent_response_hours
    sql_s = vec_s = predict_s = reasons_s = write_s = 0.0
    n = 0
    as_of = timezone.now()
    for chunk in run.chunks.order_by("index"):
        t = time.perf_counter()
        raw = risk_selectors.lead_features(
            tenant_id=tenant.pk,
            as_of=as_of,
            id_range=(chunk.first_lead_id, chunk.last_lead_id),
            only_active=True,
            agent_response_hours=hours,
        )
        sql_s += time.perf_counter() - t
        t = time.perf_counter()
        X = vectorize(raw, scorer.spec)
        vec_s += time.perf_counter() - t
        t = time.perf_counter()
        p = scorer.predict_proba(X)
        predict_s += time.perf_counter() - t
        t = time.perf_counter()
        reasons_explain(scorer, X, p)
        reasons_s += time.perf_counter() - t
        t = time.perf_counter()
        scored_leads = scores_compute(scorer=scorer, raw=raw, thresholds=thresholds, as_of=as_of)
        scores_apply(tenant_id=tenant.pk, scored=scored_leads)
        write_s += time.perf_counter() - t
        n += len(raw)
    floor = sql_s + predict_s
    log(
        f"RAW FLOOR (1 process, {n} leads): feature SQL {sql_s:.1f}s + model call "
        f"{predict_s:.2f}s = {floor:.1f}s; vectorize {vec_s:.2f}s, reasons "
        f"{reasons_s:.1f}s, compute+bulk write {write_s:.1f}s"
    )
    log(
        f"OVERHEAD: full rescore CPU-sum over chunks {sum(chunk_times):.1f}s / floor "
        f"{floor:.1f}s = {sum(chunk_times) / floor:.2f}x"
    )

    # 3) Real-time: one lead, features + predict + reasons + write, as the task does.
    rng = np.random.default_rng(7)
    ids = np.array(Lead.objects.filter(tenant=tenant).values_list("id", flat=True))
    sample = rng.choice(ids, size=min(args.realtime_samples, len(ids)), replace=False)
    leads_rescore(tenant_id=tenant.pk, lead_ids=[int(sample[0])])  # warm caches
    times, sql_times = [], []
    for lead_id in sample:
        t = time.perf_counter()
        leads_rescore(tenant_id=tenant.pk, lead_ids=[int(lead_id)])
        times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        risk_selectors.lead_features(
            tenant_id=tenant.pk, as_of=timezone.now(), lead_ids=[int(lead_id)]
        )
        sql_times.append((time.perf_counter() - t) * 1000)
    times.sort()
    sql_times.sort()

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))]

    log(
        f"REAL-TIME RESCORE ({len(times)} leads): p50 {pct(times, 0.5):.1f} ms, p99 "
        f"{pct(times, 0.99):.1f} ms (its feature SQL alone: p50 {pct(sql_times, 0.5):.1f} ms, "
        f"p99 {pct(sql_times, 0.99):.1f} ms)"
    )

    # 4) Ingest to new score through the real path: activities_ingest commits, the
    # receiver enqueues after commit, a real Celery worker process (Redis broker, solo
    # pool, queue "scoring") rescores; we poll the lead's row.
    import subprocess

    from churnapp.services.activities import ActivityInput, activities_ingest
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("scoring")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config.celery",
            "worker",
            "-Q",
            "scoring",
            "-P",
            "solo",
            "-l",
            "WARNING",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies = []
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(
            destination=[f"bench-{os.getpid()}@{os.uname().nodename}"], timeout=0.5
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's Celery worker did not start")
        for n, lead_id in enumerate(sample[: args.e2e_samples]):
            lead = Lead.objects.only("external_id", "risk_scored_at").get(pk=int(lead_id))
            before = lead.risk_scored_at
            t = time.perf_counter()
            activities_ingest(
                tenant=tenant,
                items=[
                    ActivityInput(
                        lead.external_id, "sms_inbound", timezone.now(), f"e2e-{time.time()}-{n}"
                    )
                ],
            )
            while not Lead.objects.filter(pk=lead.pk, risk_scored_at__gt=before).exists():
                time.sleep(0.001)
            latencies.append((time.perf_counter() - t) * 1000)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    latencies.sort()
    log(
        f"INGEST -> NEW SCORE via Celery ({len(latencies)} leads): p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms (ingest transaction, broker hop, rescore, commit)"
    )


if __name__ == "__main__":
    main()
