"""Fixtures for the notifications tests: provider fakes, SMTP, channel configs, a worker."""

from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings as django_settings

from churnapp.factories import AgentFactory, LeadFactory
from notifications.models import ChannelConfig, Template
from tests.fakes.ghl import GhlFake
from tests.fakes.inapp import InAppFake
from tests.fakes.push import PushFake
from tests.fakes.smtp import SmtpServer
from tests.fakes.twilio import TwilioFake
from tests.waiting import wait_for  # noqa: F401  (re-exported)

ALL_QUEUES = ["default", "sms", "email", "crm", "realtime"]


@pytest.fixture(autouse=True)
def notif_settings(settings):
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 0.05
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 0.5
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 2.0
    settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT = 2.0
    settings.NOTIFICATIONS_RATE_LIMIT_PREFIX = f"test-rl-{time.monotonic_ns()}"
    settings.IN_APP_WEBHOOK_SECRET = ""
    settings.NOTIFICATION_BACKENDS = {
        **django_settings.NOTIFICATION_BACKENDS,
        **{
            c: "notifications.backends.locmem.LocmemBackend"
            for c in django_settings.NOTIFICATION_BACKENDS
        },
    }
    return settings


@pytest.fixture
def redis_flushed():
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def ghl_fake():
    fake = GhlFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def twilio_fake():
    fake = TwilioFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def push_fake():
    fake = PushFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def inapp_fake():
    fake = InAppFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def agent(tenant):
    return AgentFactory(tenant=tenant, ghl_user_id="ghl-user-7")


@pytest.fixture
def lead(tenant, agent):
    return LeadFactory(tenant=tenant, assigned_agent=agent, phone="+15125550111")


def template_make(tenant, channel: str, key: str = "checkin", **fields) -> Template:
    defaults = {
        "variant": "A",
        "subject": "Still looking, {{ lead.first_name }}?" if channel != "sms" else "",
        "body_text": "Hi {{ lead.first_name }}, {{ agent.name }} here. Any questions?",
    }
    defaults.update(fields)
    template = Template(tenant=tenant, channel=channel, key=key, **defaults)
    template.full_clean()
    template.save()
    return template


def channel_config(tenant, channel: str, backend: str, **options) -> ChannelConfig:
    config, _ = ChannelConfig.objects.update_or_create(
        tenant=tenant, channel=channel, defaults={"backend": backend, "options": options}
    )
    return config


def ghl_config(tenant, fake: GhlFake, channel: str, backend: str, **options) -> ChannelConfig:
    return channel_config(
        tenant, channel, backend, base_url=fake.url, api_token=fake.token, **options
    )


def twilio_config(tenant, fake: TwilioFake, **options) -> ChannelConfig:
    options.setdefault("from_number", "+15125550000")
    return channel_config(
        tenant,
        "sms",
        "notifications.backends.twilio.TwilioSmsBackend",
        base_url=fake.url,
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        **options,
    )


@pytest.fixture
def celery_worker(transactional_db, redis_flushed):
    """A real Celery worker (in a thread, solo pool) on every queue the sends use."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=ALL_QUEUES,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
