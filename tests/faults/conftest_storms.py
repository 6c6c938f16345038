"""Fixtures and helpers for the provider-storm and duplicate tests: every provider fake
wired to two tenants, a real threaded Celery worker, a beat stand-in that fires the
outbox sweeper, and a ledger that counts the provider requests made for each message.

Import what a test module uses (`from tests.faults.conftest_storms import ...`): this is
not a conftest.py, so that another branch's tests/faults/conftest.py cannot collide."""

from __future__ import annotations

import base64
import itertools
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import py_vapid
import pytest
import redis
from django.conf import settings as django_settings

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import Lead, Tenant
from notifications.models import DeliveryAttempt, Message, MessageStatus, PushSubscription
from tests.fakes.ghl import GhlFake
from tests.fakes.http import Answer, FakeServer, Recorded
from tests.fakes.inapp import InAppFake
from tests.fakes.push import PushFake
from tests.fakes.smtp import SmtpServer
from tests.fakes.twilio import TwilioFake
from tests.notifications.conftest import channel_config, ghl_config, template_make, twilio_config

# Statuses a message may end in: sent or further, given up (with the reason on the row),
# or `unknown` (the request went out and no answer came: a person or the provider's
# callback settles it, never a blind resend).
SETTLED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
        MessageStatus.REPLIED,
        MessageStatus.FAILED,
        MessageStatus.BOUNCED,
        MessageStatus.DEAD,
        MessageStatus.SUPPRESSED,
        MessageStatus.UNKNOWN,
    }
)
WENT_OUT = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
        MessageStatus.REPLIED,
    }
)
GAVE_UP = frozenset({MessageStatus.DEAD, MessageStatus.FAILED, MessageStatus.BOUNCED})

# The two tenants' channels: acme speaks GHL, Web Push and in-app; other speaks Twilio
# and SMTP. Together they cover every backend that talks to a provider.
ACME_CHANNELS = ("sms", "email", "ghl_workflow", "ghl_task", "push", "in_app")
OTHER_CHANNELS = ("sms", "email")
# Where a message goes when its channel gives up. Never into push: a lead's push
# subscription is how the ledger tells its push messages apart.
FALLBACK = {
    "sms": "email",
    "email": "sms",
    "ghl_workflow": "sms",
    "ghl_task": "email",
    "push": "in_app",
    "in_app": "ghl_task",
}


@pytest.fixture
def storm_settings(settings):
    """Short backoff and timeouts, a fresh rate-limit namespace, no console backends."""
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 0.1
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 1.0
    settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT = 2.0
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 2.0
    # Short, but longer than a send waits in the queue on a busy machine: the sweeper
    # re-enqueues every due message untouched this long, so a shorter time piles up
    # duplicate tasks faster than the worker drains them (the claim keeps them harmless).
    settings.NOTIFICATIONS_SWEEP_AFTER_SECONDS = 5
    settings.NOTIFICATIONS_STALE_SENDING_SECONDS = 120
    settings.NOTIFICATIONS_RATE_LIMIT_PREFIX = f"test-storm-rl-{time.monotonic_ns()}"
    settings.IN_APP_WEBHOOK_SECRET = ""
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    return settings


@pytest.fixture
def storm_worker(transactional_db, storm_settings):
    """A real Celery worker (4 threads, every queue): retries, sweeps and duplicate
    deliveries really overlap. The test's Redis database is emptied first."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    client = redis.Redis.from_url(django_settings.REDIS_URL)
    client.flushdb()
    client.close()
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        queues=django_settings.CELERY_QUEUE_NAMES,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


class Beat:
    """Stands in for celery beat: publishes a task every `interval` seconds."""

    def __init__(self, task_name: str, interval: float, queue: str = "default") -> None:
        self.task_name, self.interval, self.queue = task_name, interval, queue
        self.fired = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"beat-{task_name}", daemon=True)

    def _run(self) -> None:
        from config.celery import app

        while not self._stop.wait(self.interval):
            app.send_task(self.task_name, queue=self.queue)
            self.fired += 1

    def start(self) -> Beat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def sweeper_beat(storm_worker):
    """The outbox sweeper fired every second, as beat fires it every minute."""
    beat = Beat("notifications.outbox_sweep", 1.0).start()
    yield beat
    beat.stop()


@dataclass
class Providers:
    ghl: GhlFake
    twilio: TwilioFake
    push: PushFake
    inapp: InAppFake
    smtp: SmtpServer

    @property
    def named(self) -> list[tuple[str, FakeServer]]:
        """The HTTP fakes with the provider name `send_key` knows them by."""
        return [
            ("ghl", self.ghl),
            ("twilio", self.twilio),
            ("push", self.push),
            ("in_app", self.inapp),
        ]

    @property
    def http(self) -> list[FakeServer]:
        return [fake for _, fake in self.named]


@pytest.fixture
def providers(storm_settings):
    fakes = Providers(
        ghl=GhlFake().start(),
        twilio=TwilioFake().start(),
        push=PushFake().start(),
        inapp=InAppFake().start(),
        smtp=SmtpServer().start(),
    )
    storm_settings.EMAIL_HOST, storm_settings.EMAIL_PORT = "127.0.0.1", fakes.smtp.port
    yield fakes
    for fake in fakes.http:
        fake.outage = None
        fake.release()
        fake.stop()
    fakes.smtp.outage = None
    fakes.smtp.stop()


def _vapid_private_key() -> str:
    vapid = py_vapid.Vapid01()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def acme_wire(tenant: Tenant, fakes: Providers) -> None:
    """GHL SMS, email, workflow and task, Web Push and in-app, with their templates."""
    ghl_config(tenant, fakes.ghl, "sms", "notifications.backends.ghl.GhlSmsBackend")
    ghl_config(tenant, fakes.ghl, "email", "notifications.backends.ghl.GhlEmailBackend")
    ghl_config(
        tenant,
        fakes.ghl,
        "ghl_workflow",
        "notifications.backends.ghl.GhlWorkflowBackend",
        workflow_id="wf-nurture",
    )
    ghl_config(tenant, fakes.ghl, "ghl_task", "notifications.backends.ghl.GhlTaskBackend")
    channel_config(
        tenant,
        "push",
        "notifications.backends.push.WebPushBackend",
        vapid_private_key=_vapid_private_key(),
        vapid_claims_sub="mailto:ops@acme.test",
    )
    channel_config(
        tenant,
        "in_app",
        "notifications.backends.inapp.InAppWebhookBackend",
        url=fakes.inapp.webhook_url,
        secret=fakes.inapp.secret,
    )
    for channel in ACME_CHANNELS:
        template_make(tenant, channel, subject="Still looking, {{ lead.first_name }}?")


def other_wire(tenant: Tenant, fakes: Providers) -> None:
    """Twilio SMS and SMTP email, with their templates."""
    twilio_config(tenant, fakes.twilio)
    channel_config(tenant, "email", "notifications.backends.email.DjangoEmailBackend")
    for channel in OTHER_CHANNELS:
        template_make(tenant, channel, subject="Still looking, {{ lead.first_name }}?")


def tenants_wire(*, acme: Tenant, other: Tenant, fakes: Providers) -> None:
    acme_wire(acme, fakes)
    other_wire(other, fakes)


def leads_make(*, tenant: Tenant, n: int, fakes: Providers | None = None) -> list[Lead]:
    """n leads with phone and email; with `fakes`, each has its own push subscription."""
    agent = AgentFactory(tenant=tenant)
    leads = [LeadFactory(tenant=tenant, assigned_agent=agent) for _ in range(n)]
    if fakes is not None:
        for lead in leads:
            sub = fakes.push.subscribe()
            PushSubscription.objects.create(
                tenant=tenant,
                lead=lead,
                endpoint=sub["endpoint"],
                p256dh=sub["keys"]["p256dh"],
                auth=sub["keys"]["auth"],
            )
    return leads


# --- outages ---------------------------------------------------------------------------


class Storm:
    """A provider outage across every fake: 5xx (or any answers) to each send until
    `end()`. SMTP gets a 4xx reply to DATA, the way a mail server says "later"."""

    def __init__(
        self,
        http_statuses: Iterable[int] = (500, 502, 503, 504),
        smtp_replies: Iterable[str] = (
            "421 4.3.2 Service shutting down",
            "451 4.3.0 Temporary local problem",
            "452 4.3.1 Insufficient system storage",
        ),
    ) -> None:
        self._statuses = itertools.cycle(http_statuses)
        self._replies = itertools.cycle(smtp_replies)
        self._lock = threading.Lock()
        self.answered = 0
        self._fakes: Providers | None = None

    def _http(self, request: Recorded) -> Answer:
        with self._lock:
            self.answered += 1
            status = next(self._statuses)
        return Answer(status, body={"message": f"storm: upstream answered {status}"})

    def _smtp(self, message_id: str) -> str:
        with self._lock:
            self.answered += 1
            return next(self._replies)

    def begin(self, fakes: Providers) -> Storm:
        self._fakes = fakes
        for fake in fakes.http:
            fake.outage = self._http
        fakes.smtp.outage = self._smtp
        return self

    def end(self) -> None:
        for fake in self._fakes.http:
            fake.outage = None
        self._fakes.smtp.outage = None


def attempts_to_outlast(seconds: float, *, base: float, ceiling: float) -> int:
    """The fewest attempts whose shortest possible backoffs (equal jitter: at least half
    of each delay) add up to `seconds`: a message with this budget is still retrying
    when an outage that long ends."""
    waited, attempts = 0.0, 1
    while waited < seconds:
        waited += min(ceiling, base * 2 ** (attempts - 1)) / 2
        attempts += 1
    return attempts


# --- the ledger: provider requests per message ------------------------------------------

_MID = re.compile(r"[?&]mid=(\d+)")
_SMTP_ID = re.compile(r"<notification-(\d+)@")


@dataclass
class Send:
    """One send request a provider saw for a message: its answer and when it came."""

    provider: str
    answered: int | None  # None: never answered (the connection hung)
    at: float | None


def send_key(provider: str, request: Recorded) -> str | None:
    """What names the message a provider request sends, read off the request alone (the
    fakes' threads stay off the database): the idempotency key (GHL, in-app), our id in
    the status callback URL (Twilio), the subscription (push). None: not a send."""
    if request.method != "POST":
        return None  # GETs are reconciliation lookups, not sends
    if provider == "twilio":
        match = _MID.search(request.form().get("StatusCallback", ""))
        return f"mid:{match.group(1)}" if match else None
    if provider in ("ghl", "in_app"):
        key = request.headers.get("idempotency-key")
        return f"key:{key}" if key else None
    if provider == "push":
        return f"push:{request.path.rsplit('/', 1)[-1]}"
    raise ValueError(provider)


def _message_id_of(key: str) -> int | None:
    kind, _, value = key.partition(":")
    if kind == "mid":
        return int(value)
    if kind == "key":
        return Message.objects.filter(idempotency_key=value).values_list("pk", flat=True).first()
    sub = PushSubscription.objects.filter(endpoint__endswith=f"/push/{value}").first()
    if sub is None:
        return None
    return (
        Message.objects.filter(channel="push", lead_id=sub.lead_id, agent_id=sub.agent_id)
        .values_list("pk", flat=True)
        .first()
    )


def sends_by_message(fakes: Providers) -> dict[int, list[Send]]:
    """Every send request each provider saw, by our message id, in arrival order."""
    sends: dict[int, list[Send]] = defaultdict(list)
    for provider, fake in fakes.named:
        for request in list(fake.requests):
            key = send_key(provider, request)
            message_id = _message_id_of(key) if key else None
            if message_id is not None:
                sends[message_id].append(Send(provider, request.answered, request.at))
    for message_id_header, code in list(fakes.smtp.data_seen):
        match = _SMTP_ID.search(message_id_header)
        if match:
            sends[int(match.group(1))].append(Send("smtp", code, None))
    return sends


@dataclass
class Ledger:
    """What the providers saw against what the database says, for a report line."""

    messages: int = 0
    went_out: int = 0
    gave_up: int = 0
    fell_back: int = 0
    unknown: int = 0
    provider_requests: int = 0
    retried: int = 0
    duplicates: int = 0
    losses: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        return (
            f"{label}: messages={self.messages} went_out={self.went_out} "
            f"gave_up={self.gave_up} fell_back={self.fell_back} unknown={self.unknown} "
            f"retried={self.retried} provider_requests={self.provider_requests} "
            f"duplicates={self.duplicates} losses={self.losses}"
        )


def _accepted(code: int | None) -> bool:
    return code is not None and 200 <= code < 300


def ledger_check(fakes: Providers, messages: Iterable[Message] | None = None) -> Ledger:
    """Count duplicates and losses over `messages` (default: every message).

    A duplicate is a send request for a message after the provider accepted one, or
    after one that was never answered (it may have gone out: a blind resend). A loss is
    a message that is not settled, or that gave up with a fallback channel left and no
    fallback message, or that went out without the provider having accepted it."""
    sends = sends_by_message(fakes)
    rows = list(messages) if messages is not None else list(Message.objects.all())
    attempts = defaultdict(int)
    for message_id in DeliveryAttempt.objects.filter(message__in=rows).values_list(
        "message_id", flat=True
    ):
        attempts[message_id] += 1
    ledger = Ledger(messages=len(rows))
    for message in rows:
        message.refresh_from_db()
        seen = sends.get(message.pk, [])
        ledger.provider_requests += len(seen)
        if len(seen) > 1:
            ledger.retried += 1
        closed = False
        for send in seen:
            if closed:
                ledger.duplicates += 1
                ledger.problems.append(f"message {message.pk}: a send after {seen}")
            closed = closed or send.answered is None or _accepted(send.answered)
        if sum(_accepted(s.answered) for s in seen) > 1:
            ledger.problems.append(f"message {message.pk}: accepted more than once {seen}")
        if len(seen) > attempts[message.pk]:
            ledger.duplicates += len(seen) - attempts[message.pk]
            ledger.problems.append(
                f"message {message.pk}: {len(seen)} provider requests but "
                f"{attempts[message.pk]} recorded attempts"
            )
        if message.status not in SETTLED:
            ledger.losses += 1
            ledger.problems.append(f"message {message.pk} ended {message.status}")
        elif message.status in WENT_OUT:
            ledger.went_out += 1
            # Accepted by a provider, or by a request whose answer was lost and that
            # reconciliation found at the provider afterwards.
            if not any(_accepted(s.answered) or s.answered is None for s in seen):
                ledger.losses += 1
                ledger.problems.append(f"message {message.pk} is {message.status}: {seen}")
        elif message.status == MessageStatus.UNKNOWN:
            ledger.unknown += 1
        elif message.status in GAVE_UP:
            ledger.gave_up += 1
            if message.fallback_channels:
                fallback = Message.objects.filter(fallback_of=message).first()
                if fallback is None:
                    ledger.losses += 1
                    ledger.problems.append(f"message {message.pk} gave up without fallback")
                else:
                    ledger.fell_back += 1
    return ledger


def settled(tenants: Iterable[Tenant]) -> Callable[[], bool]:
    ids = [t.pk for t in tenants]

    def check() -> bool:
        return not Message.objects.filter(tenant_id__in=ids).exclude(status__in=SETTLED).exists()

    return check


def unsettled(tenants: Iterable[Tenant]) -> Callable[[], list]:
    ids = [t.pk for t in tenants]
    return lambda: list(
        Message.objects.filter(tenant_id__in=ids)
        .exclude(status__in=SETTLED)
        .values_list("pk", "channel", "status", "attempts", "next_attempt_at")
    )
