"""A short real run (history, ingest, rescore, intervention, send through a real worker)
moves the series /metrics exports; webhook rejections are counted by reason."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from churnapp.ml.synthetic import SyntheticEvent, SyntheticLead
from churnapp.models import Lead, Tenant
from churnapp.services.activities import ActivityInput, activities_ingest
from churnapp.services.event_import import synthetic_history_load
from churnapp.tasks import rescore_leads
from interventions.models import Intervention
from interventions.services.policy import policy_ensure
from notifications.models import Message
from tests.churnapp.conftest import wait_for


@pytest.fixture
def locmem_sends(settings):
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    return settings


def _silent_leads(tenant: Tenant, now: dt.datetime, n: int = 6) -> list[Lead]:
    """Lead i last replied 5*i days ago and has been chased since, unanswered."""
    leads, events = [], []
    for i in range(n):
        ext = f"ops-{i}"
        leads.append(SyntheticLead(ext, "zillow", "new", now - dt.timedelta(days=80)))
        last = now - dt.timedelta(days=5 * i, hours=1)
        for d in range(0, 30, 2):
            events.append(SyntheticEvent(ext, last - dt.timedelta(days=d), "sms_inbound"))
        for d in range(0, 5 * i, 3):
            events.append(SyntheticEvent(ext, now - dt.timedelta(days=d, hours=2), "sms_outbound"))
    synthetic_history_load(tenant=tenant, leads=leads, events=events)
    return list(Lead.objects.filter(tenant=tenant).order_by("external_id"))


@pytest.mark.django_db(transaction=True)
def test_a_short_run_moves_the_series(celery_worker, locmem_sends, scrape):
    # given: a tenant whose policy sends at once, and leads with a history
    tenant = Tenant.objects.create(name="Ops Realty", slug="ops-realty", timezone="UTC")
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()
    now = timezone.now()
    leads = _silent_leads(tenant, now)
    before = scrape()

    # when: new activity arrives, the leads are rescored on the worker, interventions
    # start and their messages go out through the same worker
    activities_ingest(
        tenant=tenant,
        items=[
            ActivityInput(
                lead_external_id=leads[-1].external_id,
                kind="sms_outbound",
                occurred_at=now - dt.timedelta(minutes=5),
                source_event_id="ops-flow-1",
                direction="outbound",
                channel="sms",
            )
        ],
    )
    rescore_leads.delay(tenant.id, [lead.id for lead in leads])
    intervention = wait_for(
        lambda: Intervention.objects.filter(tenant=tenant).order_by("id").first(), timeout=60
    )
    sent = wait_for(
        lambda: Message.objects.filter(
            tenant=tenant, lead=intervention.lead, sent_at__isnull=False
        ).first(),
        timeout=60,
    )
    # then: the series moved
    after = wait_for(
        lambda: (
            (s := scrape()).value(
                "churn_detection_to_first_send_seconds_count", stage=str(intervention.stage)
            )
            > before.value(
                "churn_detection_to_first_send_seconds_count", stage=str(intervention.stage)
            )
            and s
        ),
        timeout=30,
    )

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    task = "churnapp.rescore_leads"
    assert moved("churn_leads_scored_total", task=task) == len(leads)
    assert moved("churn_scoring_run_seconds_count", task=task) == 1
    assert moved("churn_scoring_run_seconds_sum", task=task) > 0
    assert moved("churn_risk_tier_changes_total") >= 1
    assert moved("churn_intervention_events_total", event="started") >= 1
    assert moved("churn_messages_total", channel=sent.channel, status="sent") >= 1
    assert moved("churn_send_latency_seconds_count", provider="locmem") >= 1
    assert moved("churn_send_attempts_total", provider="locmem", outcome="sent") >= 1
    # The task counter moves for the task that ran (the rescore's own: its few planned
    # sends go out in it after commit, more through batch tasks; see
    # interventions.services.dispatch).
    assert moved("churn_celery_tasks_total", task=task, state="SUCCESS") == 1
    # detected_at -> sent_at of this intervention's first message, observed once for it
    assert moved("churn_detection_to_first_send_seconds_count") >= 1
    assert (
        moved("churn_detection_to_first_send_seconds_sum")
        >= (sent.sent_at - intervention.detected_at).total_seconds() - 1e-3
    )
    # scrape-time gauges: every queue, every channel, escalations, heartbeats
    for queue in django_settings.CELERY_QUEUE_NAMES:
        assert after.has("churn_queue_depth", queue=queue)
        assert after.has("churn_workers_live", queue=queue)
    assert after.has("churn_outbox_oldest_age_seconds", channel="sms")
    assert after.has("churn_escalations_open", status="open")
    assert after.has("churn_beat_last_tick_timestamp_seconds")
    assert after.value("churn_ops_collector_up") == 4  # all four parts were read


@pytest.mark.django_db
def test_webhook_rejections_are_counted_by_reason(tenant, scrape):
    before = scrape()
    # an unsigned GHL webhook and a Twilio callback without its signature
    response = Client().post(
        f"/api/webhooks/ghl/{tenant.slug}/", data=b"{}", content_type="application/json"
    )
    assert response.status_code == 401
    after = scrape()
    assert (
        after.value(
            "churn_webhook_rejections_total", source="webhook-ghl", reason="signature_missing"
        )
        - before.value(
            "churn_webhook_rejections_total", source="webhook-ghl", reason="signature_missing"
        )
        == 1
    )


@pytest.mark.django_db
def test_outbox_age_and_queue_depth_are_read_at_scrape_time(tenant, scrape, settings):
    from celery import current_app

    from churnapp.factories import LeadFactory
    from notifications.models import Message

    # given: a queued email created ten minutes ago, and two tasks waiting in "crm"
    lead = LeadFactory(tenant=tenant)
    message = Message.objects.create(
        tenant=tenant, lead=lead, channel="email", idempotency_key="ops-age-1"
    )
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - dt.timedelta(minutes=10)
    )
    with current_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("crm")
    for _ in range(2):
        current_app.send_task("system.ping", queue="crm")
    # when
    metrics = scrape()
    # then
    assert 600 <= metrics.value("churn_outbox_oldest_age_seconds", channel="email") < 700
    assert metrics.value("churn_outbox_due_messages", channel="email") == 1
    assert metrics.value("churn_queue_depth", queue="crm") == 2
    with current_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("crm")


@pytest.mark.django_db(transaction=True)  # the broadcast is handed over on commit
def test_dashboard_broadcast_lag_is_observed(tenant, scrape):
    from tracking.events import tracking_broadcasts_flush, tracking_event_record

    # given: the process's publisher has sent whatever it held
    tracking_broadcasts_flush()
    before = scrape()
    # when: two lifecycle events commit (autocommit: their broadcasts are handed over now)
    for _ in range(2):
        tracking_event_record(tenant_id=tenant.id, kind="tier_changed", lead_id=1)
    tracking_broadcasts_flush()
    # then: each publish is observed on the dashboard stream
    after = scrape()
    count = "churn_broadcast_lag_seconds_count"
    assert after.value(count, stream="dashboard") - before.value(count, stream="dashboard") == 2


def test_agent_alert_broadcast_lag_is_observed(tenant, scrape, settings):
    from churnapp.factories import AgentFactory, LeadFactory
    from notifications.services.sending import message_send

    # given: an agent alert created a minute ago, sent over the real channel layer
    settings.NOTIFICATION_BACKENDS = {
        **django_settings.NOTIFICATION_BACKENDS,
        "agent_alert": "notifications.backends.agent_alert.ChannelLayerAlertBackend",
    }
    agent = AgentFactory(tenant=tenant)
    message = Message.objects.create(
        tenant=tenant,
        lead=LeadFactory(tenant=tenant, assigned_agent=agent),
        agent=agent,
        channel="agent_alert",
        body_text="Lead at risk",
        idempotency_key="ops-alert-1",
    )
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - dt.timedelta(minutes=1)
    )
    before = scrape()
    # when
    message_send(message_id=message.id)
    # then
    message.refresh_from_db()
    assert message.status == "sent", message.status_reason
    after = scrape()
    count = "churn_broadcast_lag_seconds_count"
    lag = "churn_broadcast_lag_seconds_sum"
    assert after.value(count, stream="agent_alert") - before.value(count, stream="agent_alert") == 1
    assert after.value(lag, stream="agent_alert") - before.value(lag, stream="agent_alert") >= 60


@pytest.mark.django_db
def test_metrics_token_guards_the_endpoint(settings):
    settings.METRICS_TOKEN = "s3cret"
    refused = Client().get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    allowed = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert allowed.status_code == 200 and b"churn_queue_depth" in allowed.content
