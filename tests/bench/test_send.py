"""Send throughput: queued messages through claim, render, the provider's HTTP API (the
Twilio fake), the attempt record and the status, by 2 real Celery worker processes.

Tenants each have their own Twilio account (as brokerages do), so the per-account rate
limit (100/s) holds for every account while the system as a whole is measured. Raw floor
in the same run: 2 plain keep-alive HTTP clients posting the same number of sends to the
same fake.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Max, Min

from churnapp.models import Lead, Tenant
from notifications.models import ChannelConfig, DeliveryAttempt, Message, MessageStatus
from notifications.services.messages import messages_enqueue
from notifications.services.sending import send_batch_size
from notifications.tasks import message_send
from simulator.bulk import bulk_generate
from tests.bench.harness import BENCH, analyze_database, is_smoke, sized
from tests.bench.http_floor import post_sends
from tests.bench.stack import BenchWorker, purge_queues, pyspy_record
from tests.fakes.twilio import TwilioFake
from tracking.models import TrackingEvent

pytestmark = [*BENCH, pytest.mark.django_db(transaction=True)]

TARGET = 1000.0  # messages/s
ACCOUNTS = 20
WORKERS = 2
BODY = "Hi {name}, new listings in your range this week. Want a quick list?\nReply STOP to opt out."


def _tenants(fake: TwilioFake, per_tenant: int) -> list[Tenant]:
    tenants = []
    for n, (sid, token) in enumerate(sorted(fake.accounts.items())):
        tenant = Tenant.objects.create(name=f"Send {n}", slug=f"send-{n}", timezone="UTC")
        bulk_generate(tenant=tenant, leads=per_tenant, activities=0, seed=100 + n)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Lead._meta.db_table} SET phone = '+1512' || lpad((id %% 10000000)::text, 7, '0'),"
                " status = 'active' WHERE tenant_id = %s",
                [tenant.id],
            )
        ChannelConfig.objects.create(
            tenant=tenant,
            channel="sms",
            backend="notifications.backends.twilio.TwilioSmsBackend",
            options={
                "base_url": fake.url,
                "account_sid": sid,
                "auth_token": token,
                "from_number": "+15125550100",
            },
        )
        tenants.append(tenant)
    return tenants


def _outbox(tenants: list[Tenant], label: str, per_tenant: int | None = None) -> list[int]:
    """One queued SMS per lead (the first `per_tenant` leads) of every tenant: the rows
    interventions would have planned."""
    rows = []
    for tenant in tenants:
        leads = Lead.objects.filter(tenant=tenant).order_by("id").only("id", "first_name", "phone")
        for lead in leads[:per_tenant]:
            rows.append(
                Message(
                    tenant=tenant,
                    lead=lead,
                    channel="sms",
                    template_key="stage2",
                    variant="A",
                    body_text=BODY.format(name=lead.first_name),
                    to_address=lead.phone,
                    idempotency_key=f"bench:{label}:{lead.id}",
                    metadata={"bench": label},
                )
            )
    Message.objects.bulk_create(rows, batch_size=2000)
    return list(
        Message.objects.filter(metadata__bench=label).order_by("id").values_list("id", flat=True)
    )


def _enqueue(ids: list[int], path: str) -> None:
    if path == "batch":
        # What a fan-out that planned many messages publishes: a batch task per tenant
        # and up to NOTIFICATIONS_SEND_BATCH_SIZE of its messages.
        messages_enqueue(message_ids=ids)
        return
    for message_id in ids:
        message_send.apply_async(args=[message_id], queue="sms")


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) these processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far (/proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


class CpuMeter:
    """Where the CPU of a run goes, per message: the send workers, the fake (this test
    process, which serves it), the PostgreSQL backends of this database, Redis (shared
    with anything else on the machine), and the machine as a whole. With 2 cores, a
    rate of R messages/s needs at most 2000 / R CPU ms per message in total."""

    def __init__(self, workers: list[int]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            postgres = [row[0] for row in cursor.fetchall()]
        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            redis_pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        self.groups = {
            "workers": workers,
            "fake": [os.getpid()],
            "postgres": postgres,
            "redis": [redis_pid],
        }
        self.start = {name: _cpu(pids) for name, pids in self.groups.items()}
        self.machine = _machine_busy()

    def per_message(self, count: int) -> str:
        used = {name: _cpu(pids) - self.start[name] for name, pids in self.groups.items()}
        busy, total = (a - b for a, b in zip(_machine_busy(), self.machine, strict=True))
        parts = ", ".join(f"{name} {seconds * 1000 / count:.2f}" for name, seconds in used.items())
        return (
            f"CPU ms per message: {parts}; sum {sum(used.values()) * 1000 / count:.2f}; "
            f"machine busy {busy * 1000 / count:.2f} ({busy / total:.0%} of "
            f"{os.cpu_count()} cores)"
        )


def _settled(ids: list[int]) -> int:
    # By the ids' range, not an IN list of them: the run's outbox is one bulk insert,
    # and compiling a 5,000-id IN list cost this process 45 ms of CPU a poll (28 polls a
    # run, a tenth of the machine, charged to the fake).
    first, last = min(ids), max(ids)
    assert last - first + 1 == len(ids), "the outbox's ids are not one contiguous range"
    return (
        Message.objects.filter(id__range=(first, last))
        .exclude(status__in=["queued", "sending"])
        .count()
    )


def _wait_settled(ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _settled(ids) < len(ids):
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)


# The batch path (messages_enqueue: one task per tenant and up to 50 messages), the one
# held to the target: interventions and every planned fan-out publish their sends that
# way. And, for comparison, the single-send task every message can still be published
# to: retries, rate-limit deferrals, the sweeper's re-enqueues and one-off sends.
PATHS = {
    "batch": ("send throughput", "batch tasks of up to {batch} messages per tenant"),
    "single": (
        "send throughput (one task per message)",
        "one message_send task per message (NOTIFICATIONS_SEND_DRAIN="
        + str(settings.NOTIFICATIONS_SEND_DRAIN).lower()
        + ")",
    ),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_send_throughput(bench_results, path):
    count = -(-sized(5_000, 60) // ACCOUNTS) * ACCOUNTS
    warm_per_tenant = 1 if is_smoke() else 10
    per_tenant = -(-count // ACCOUNTS)

    # given tenants with their own Twilio accounts on one fake, and their outboxes
    fake = TwilioFake(accounts={f"AC{n:032x}": f"token-{n}" for n in range(1, ACCOUNTS + 1)})
    del fake.accounts[fake.account_sid]
    fake.start()
    tenants = _tenants(fake, per_tenant)
    # The measured outbox is planned after the warm-up: a single send's task takes the
    # due messages of its tenant along, and would take measured ones early.
    warm_ids = _outbox(tenants, "warm", warm_per_tenant)
    purge_queues()
    names = [f"bench-send{i}-{uuid.uuid4().hex[:6]}@localhost" for i in range(WORKERS)]
    workers = [
        BenchWorker(name=name, queues=["sms"], env={}, pool="solo").start() for name in names
    ]
    from config.celery import app

    profiling = None
    try:
        for worker in workers:
            worker.wait_ready()
        # warm up: imports, connections, caches of both workers
        _enqueue(warm_ids, path)
        _wait_settled(warm_ids, timeout=300)
        ids = _outbox(tenants, "run")
        assert len(ids) == count
        analyze_database()
        # when the whole outbox is queued while the workers do not consume, then released
        app.control.cancel_consumer("sms", destination=names, reply=True)
        requests_before = len(fake.requests)
        _enqueue(ids, path)
        meter = CpuMeter([worker.pid for worker in workers])
        started = time.time()
        app.control.add_consumer("sms", destination=names, reply=True)
        profiling = pyspy_record(workers[0].pid, f"send-worker-{path}", seconds=20)
        _wait_settled(ids, timeout=1800)
        cpu = meter.per_message(count)
    finally:
        if profiling is not None:
            profiling.wait(timeout=60)
        for worker in workers:
            worker.stop()

    # then every message went out once, with its attempt on record
    sent = Message.objects.filter(id__in=ids, status=MessageStatus.SENT)
    assert sent.count() == count, list(
        Message.objects.filter(id__in=ids)
        .exclude(status="sent")
        .values_list("status", "status_reason")[:5]
    )
    assert DeliveryAttempt.objects.filter(message_id__in=ids).count() == count
    assert len(fake.requests) - requests_before == count
    assert TrackingEvent.objects.filter(message_id__in=ids, kind="message_sent").count() == count
    # A consumer's fetch already in flight when it was told to stop takes a few tasks
    # early: only the messages claimed after the release count.
    released = dt.datetime.fromtimestamp(started, dt.UTC)
    measured = sent.filter(claimed_at__gte=released)
    span = measured.aggregate(first=Min("claimed_at"), last=Max("updated_at"))
    seconds = span["last"].timestamp() - started
    rate = measured.count() / seconds

    # the floor: the same number of sends by 2 plain keep-alive clients to the same fake
    sid, token = next(iter(fake.accounts.items()))
    url = f"{fake.url}/2010-04-01/Accounts/{sid}/Messages.json"
    fake_before, machine_before = _cpu([os.getpid()]), _machine_busy()
    # The clients are this process's children: their CPU counts here once they are
    # reaped (the workers above already were), interpreter start and imports included.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = children.ru_utime + children.ru_stime
    with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as pool:
        parts = list(
            pool.map(
                post_sends,
                [url] * WORKERS,
                [(sid, token)] * WORKERS,
                [count // WORKERS] * WORKERS,
                [str(i) for i in range(WORKERS)],
            )
        )
    floor_fake_ms = (_cpu([os.getpid()]) - fake_before) * 1000 / count
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    floor_clients_ms = (children.ru_utime + children.ru_stime - children_before) * 1000 / count
    floor_busy_ms = (_machine_busy()[0] - machine_before[0]) * 1000 / count
    fake.stop()
    assert sum(p[2] for p in parts) == count // WORKERS * WORKERS
    floor_rate = (count // WORKERS * WORKERS) / (
        max(p[1] for p in parts) - min(p[0] for p in parts)
    )

    benchmark, how = PATHS[path]
    bench_results.record(
        benchmark=benchmark,
        work="queued SMS -> claim, render, Twilio API (fake), attempt, status; 2 worker processes",
        size=f"{count:,} messages, {ACCOUNTS} tenants/accounts",
        metric="messages/s",
        value=round(rate, 1),
        spread=f"{measured.count():,} in {seconds:.2f} s (first claim {span['first'].timestamp() - started:.2f} s after release)",
        floor=round(floor_rate, 1),
        floor_work="2 keep-alive HTTP clients posting the same sends to the fake",
        ratio=round(floor_rate / rate, 2),
        target=(
            f">= {TARGET:,.0f} messages/s"
            if path == "batch"
            else "none: for comparison (retries, deferrals, one-off sends)"
        ),
        met=rate >= TARGET if path == "batch" else None,
        notes=f"workers: {WORKERS} x celery -P solo on queue sms; "
        + how.format(batch=send_batch_size())
        + f"; Redis broker; settings prefetch x{settings.CELERY_WORKER_PREFETCH_MULTIPLIER}; "
        + cpu
        + f"; floor: clients {floor_clients_ms:.2f}, fake {floor_fake_ms:.2f}, machine busy "
        + f"{floor_busy_ms:.2f} CPU ms per request",
    )
