"""Fault tests' machinery: real processes to start and kill, a slow Twilio fake, an outbox
of SMS to plan and enqueue, and the ledger that proves nothing was lost or sent twice."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from churnapp.factories import LeadFactory
from churnapp.models import Lead
from notifications.models import CHANNEL_QUEUE, ChannelConfig, Message, MessageStatus
from notifications.services.sending import outbox_sweep
from tests.fakes.http import Answer, Recorded
from tests.fakes.twilio import TwilioFake
from tests.processes import (
    BeatProcess,
    DaphneProcess,
    ManagedProcess,
    RedisServer,
    WorkerProcess,
)
from tests.waiting import wait_for

# Where a message may end after the faults: sent, or unknown (claimed by a killed worker
# before its request reached the provider: it may not be sent blindly again).
FINAL = {MessageStatus.SENT, MessageStatus.UNKNOWN}
# The worker processes' send settings: fast retries, no rate limit in the way.
SEND_ENV = {
    "NOTIFICATIONS_BACKOFF_BASE_SECONDS": "0.2",
    "NOTIFICATIONS_BACKOFF_MAX_SECONDS": "2",
    "NOTIFICATIONS_TWILIO_RATE_LIMIT": "100000 per 1 second",
    "NOTIFICATIONS_HTTP_READ_TIMEOUT": "10",
    "PUBLIC_BASE_URL": "http://testserver",
    # Short, so a killed worker's unacked tasks come back to the others soon.
    "CELERY_VISIBILITY_TIMEOUT": "10",
}


class SlowTwilioFake(TwilioFake):
    """Twilio that stores each message at once and answers after `post_delay` seconds:
    a worker killed in that gap has sent the SMS but never learns its SID."""

    post_delay = 0.05

    def default(self, request: Recorded) -> Answer:
        answer = super().default(request)
        if request.method == "POST":
            time.sleep(self.post_delay)
        return answer

    def posts_by_body(self) -> Counter:
        return Counter(r.form()["Body"] for r in self.requests_to("POST"))


@pytest.fixture
def twilio():
    fake = SlowTwilioFake().start()
    yield fake
    fake.release()
    fake.stop()


@pytest.fixture
def redis_flushed():
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fault_settings(settings):
    """This process runs the sweeper in some tests: it must see a dead worker's claim
    as stale after seconds, not minutes."""
    settings.NOTIFICATIONS_STALE_SENDING_SECONDS = 3
    settings.NOTIFICATIONS_SWEEP_AFTER_SECONDS = 3
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 0.2
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 2
    settings.PUBLIC_BASE_URL = "http://testserver"
    return settings


class Processes:
    """Every process a test starts; all stopped after it, the last started first."""

    def __init__(self) -> None:
        self.started: list[ManagedProcess] = []

    def add(self, process: ManagedProcess) -> ManagedProcess:
        self.started.append(process)
        return process.start()

    def worker(self, name: str, queues: list[str], env: dict, **kwargs) -> WorkerProcess:
        return self.add(WorkerProcess(name=name, queues=queues, env=env, **kwargs))

    def beat(self, env: dict) -> BeatProcess:
        return self.add(BeatProcess(env=env))

    def daphne(self, env: dict) -> DaphneProcess:
        return self.add(DaphneProcess(env=env))

    def redis(self) -> RedisServer:
        return self.add(RedisServer())

    def logs(self) -> str:
        """Each process's last 3,000 characters, after its first few error lines (a
        crash's cause scrolls out of the tail behind the traceback of its shutdown)."""
        parts = []
        for p in self.started:
            output = p.output()
            errors = [
                line
                for line in output.splitlines()
                if "Unrecoverable" in line or "CRITICAL" in line or "ERROR/" in line
            ][:8]
            head = "".join(f"[error] {line[:400]}\n" for line in errors)
            parts.append(f"--- {p.name} {p.pid}\n{head}{output[-3000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for process in reversed(self.started):
            process.close()


@pytest.fixture
def processes():
    registry = Processes()
    yield registry
    registry.close()


def leads_make(tenant, n: int) -> list[Lead]:
    return [LeadFactory(tenant=tenant, phone=f"+1512555{i:04d}", timezone="UTC") for i in range(n)]


def twilio_channel(tenant, fake: TwilioFake) -> ChannelConfig:
    """The tenant's SMS go to the fake, for every process (the config is a row)."""
    config, _ = ChannelConfig.objects.update_or_create(
        tenant=tenant,
        channel="sms",
        defaults={
            "backend": "notifications.backends.twilio.TwilioSmsBackend",
            "options": {
                "base_url": fake.url,
                "account_sid": fake.account_sid,
                "auth_token": fake.auth_token,
                "from_number": "+15125550000",
            },
        },
    )
    return config


def outbox_plan(tenant, leads: list[Lead], n: int, prefix: str) -> list[int]:
    """n queued SMS in the outbox, spread over the leads, each with a body of its own
    (the fake's requests are matched to messages by body)."""
    rows = [
        Message(
            tenant=tenant,
            lead=leads[i % len(leads)],
            channel="sms",
            body_text=f"{prefix} message {i}: still looking for a home?",
            to_address=leads[i % len(leads)].phone,
            idempotency_key=f"{prefix}-{i}",
        )
        for i in range(n)
    ]
    return [m.pk for m in Message.objects.bulk_create(rows)]


def outbox_enqueue(message_ids: list[int], *, broker_url: str | None = None) -> int:
    """Publish the send tasks, as the web does after commit; to another broker if given.
    Returns how many were published (the first failure loses the rest)."""
    from kombu.exceptions import OperationalError as BrokerError

    from config.celery import app
    from notifications.tasks import message_send

    published = 0
    with app.connection_for_write(broker_url) as conn:
        for message_id in message_ids:
            try:
                message_send.apply_async(
                    args=[message_id],
                    queue=CHANNEL_QUEUE["sms"],
                    connection=conn,
                    retry=False,
                )
            except (BrokerError, redis.RedisError, OSError):
                break  # the broker is down: the rest is lost too, as in a web process
            published += 1
    return published


def status_counts(message_ids: list[int]) -> dict[str, int]:
    return dict(
        Counter(Message.objects.filter(pk__in=message_ids).values_list("status", flat=True))
    )


def all_final(message_ids: list[int]) -> bool:
    return not Message.objects.filter(pk__in=message_ids).exclude(status__in=FINAL).exists()


def sweep_until_final(message_ids: list[int], processes, *, timeout: float) -> None:
    """Run the outbox sweeper (beat's job, here every second) until every message is in a
    final state: it re-enqueues what dead workers took with them and settles claims cut
    off after their provider call."""

    def settled() -> bool:
        outbox_sweep()
        return all_final(message_ids)

    wait_for(
        settled,
        timeout=timeout,
        interval=1.0,
        describe=lambda: (status_counts(message_ids), processes.logs()),
    )


@dataclass
class Ledger:
    """What the database says against what the provider saw, per message."""

    statuses: dict[str, int]
    requests: int
    duplicates: int  # messages the provider got more than once
    sent_without_request: int  # sent in our books, never seen by the provider
    requested_not_sent: int  # seen by the provider, not sent in our books
    unknown: list[int] = field(default_factory=list)


def ledger(message_ids: list[int], fake: SlowTwilioFake) -> Ledger:
    posts = fake.posts_by_body()
    rows = list(Message.objects.filter(pk__in=message_ids).values_list("pk", "status", "body_text"))
    ours = {body for _, _, body in rows}
    sent = {body for _, status, body in rows if status == MessageStatus.SENT}
    return Ledger(
        statuses=dict(Counter(status for _, status, _ in rows)),
        requests=sum(n for body, n in posts.items() if body in ours),
        duplicates=sum(1 for body, n in posts.items() if body in ours and n > 1),
        sent_without_request=len(sent - set(posts)),
        requested_not_sent=len((set(posts) & ours) - sent),
        unknown=[pk for pk, status, _ in rows if status == MessageStatus.UNKNOWN],
    )


def other_backends(dbname: str | None = None) -> list[int]:
    """Server pids of every other connection to the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname or connection.settings_dict["NAME"]],
        )
        return [row[0] for row in cursor.fetchall()]


def terminate_backends() -> int:
    """pg_terminate_backend on every other connection to the test database (never
    another database's). Returns how many were terminated."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )
        return cursor.fetchone()[0]


@dataclass
class Answered:
    status: int  # 0: no HTTP answer at all (connection refused or reset)
    source_event_ids: list[str]
    body: dict | None
    headers: dict


class IngestClients:
    """Concurrent API clients posting activity batches (unique source event ids) until
    stopped; every answer is kept, to be checked against the database."""

    def __init__(
        self, url: str, api_key: str, external_ids: list[str], *, clients: int = 2, batch: int = 5
    ) -> None:
        import threading

        self.url = url.rstrip("/") + "/api/activities/bulk/"
        self.api_key = api_key
        self.external_ids = external_ids
        self.batch = batch
        self.answers: list[Answered] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def _run(self, n: int) -> None:
        import datetime as dt

        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Api-Key {self.api_key}"
        sent = 0
        while not self._stop.is_set():
            when = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
            ids = [f"c{n}-{sent + i}" for i in range(self.batch)]
            sent += self.batch
            items = [
                {
                    "lead_external_id": self.external_ids[(sent + i) % len(self.external_ids)],
                    "kind": "sms_inbound",
                    "occurred_at": when,
                    "source_event_id": sid,
                }
                for i, sid in enumerate(ids)
            ]
            try:
                response = session.post(self.url, json={"items": items}, timeout=60)
            except requests.RequestException:
                answer = Answered(0, ids, None, {})
                time.sleep(0.1)
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = {"raw": response.text[:300]}
                answer = Answered(response.status_code, ids, body, dict(response.headers))
            with self._lock:
                self.answers.append(answer)

    def start(self) -> IngestClients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def by_status(self) -> dict[int, int]:
        with self._lock:
            return dict(Counter(a.status for a in self.answers))

    def accepted_ids(self) -> set[str]:
        return {s for a in self.answers if 200 <= a.status < 300 for s in a.source_event_ids}

    def refused_ids(self) -> set[str]:
        return {s for a in self.answers if not 200 <= a.status < 300 for s in a.source_event_ids}
