"""Duplicates and out-of-order deliveries, against a real threaded Celery worker: GHL
webhooks twice and out of order, provider callbacks twice and out of order, open and
click hits repeated, and beat firing the same slot twice. Each has one effect in the
database: one row, one event, one intervention, one message, one provider request."""

# The shared fixtures are imported by name (conftest_storms is not a conftest.py).
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from churnapp.models import (
    Lead,
    LeadActivity,
    ScoringChunk,
    ScoringChunkStatus,
    ScoringRun,
    WebhookEvent,
    WebhookStatus,
)
from churnapp.services.scoring import slot_for
from config.celery import app
from interventions.models import Intervention, InterventionStatus
from notifications.email_content import click_url, open_pixel_url
from notifications.models import Message, MessageEvent, MessageStatus
from notifications.services import message_request
from notifications.services import messages as messages_service
from tests.churnapp.test_risk_batch import _history
from tests.fakes.twilio import twilio_signature
from tests.faults.conftest_storms import (  # noqa: F401  (fixtures)
    acme_wire,
    leads_make,
    ledger_check,
    other_wire,
    providers,
    settled,
    storm_settings,
    storm_worker,
    unsettled,
)
from tests.fixtures_ghl import ghl_event
from tests.notifications.conftest import template_make
from tests.waiting import wait_for
from tracking.models import (
    EventKind,
    InterventionDailyRollup,
    MessageDailyRollup,
    RollupDay,
    TrackingEvent,
)
from tracking.services.rollups import rollup_days

pytestmark = pytest.mark.django_db(transaction=True)


def at_once(*calls: Callable[[], object]) -> list:
    """Run the calls in threads released together (real concurrent requests, each on its
    own database connection); their results in order."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int, call) -> None:
        try:
            start.wait()
            results[i] = call()
        except BaseException as exc:  # reported by the caller
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


def _webhooks_done() -> bool:
    return not WebhookEvent.objects.filter(status=WebhookStatus.RECEIVED).exists()


def _webhook_states():
    return list(WebhookEvent.objects.values_list("event_type", "status", "error"))


# --- GHL webhooks ------------------------------------------------------------------------


@pytest.fixture
def ghl_tenant(tenant):
    """The tenant bound to the GHL location the signed test events come from."""
    tenant.ghl_location_id = "loc-acme"
    tenant.save(update_fields=["ghl_location_id"])
    return tenant


def test_the_same_ghl_webhook_twice_at_once_is_stored_and_applied_once(
    ghl_tenant, post_ghl, storm_worker
):
    tenant = ghl_tenant
    # given a new contact and a message from them; GHL delivers each event twice at once,
    # and the message event once more under a new webhookId (a re-sent event)
    contact = ghl_event("ContactCreate", id="c-dup", firstName="Ann", phone="5125550123")
    inbound = ghl_event(
        "InboundMessage",
        contactId="c-dup",
        messageId="m-dup",
        messageType="SMS",
        direction="inbound",
        body="still looking",
    )
    resent = {**inbound, "webhookId": inbound["webhookId"] + "-again"}
    # when
    answers = at_once(*[lambda: post_ghl(tenant.slug, contact)] * 3)
    wait_for(_webhooks_done, describe=_webhook_states)
    answers += at_once(
        *[lambda: post_ghl(tenant.slug, inbound)] * 3, lambda: post_ghl(tenant.slug, resent)
    )
    wait_for(_webhooks_done, describe=_webhook_states)
    # then every delivery was answered 200, and each effect happened once
    assert [a.status_code for a in answers] == [200] * 7, [a.content for a in answers]
    assert Counter(a.json()["status"] for a in answers) == {"accepted": 3, "duplicate": 4}
    assert WebhookEvent.objects.filter(webhook_id=contact["webhookId"]).count() == 1
    assert WebhookEvent.objects.filter(webhook_id=inbound["webhookId"]).count() == 1
    assert Lead.objects.filter(tenant=tenant, external_id="c-dup").count() == 1
    assert LeadActivity.objects.filter(tenant=tenant, source_event_id="m-dup").count() == 1
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookStatus.PROCESSED}


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def test_an_older_contact_update_arriving_later_never_overwrites_newer_state(
    ghl_tenant, post_ghl, storm_worker
):
    tenant = ghl_tenant
    # given the contact was changed three times in GHL: t0 < t1 < t2
    now = timezone.now()
    t0, t1, t2 = (now - dt.timedelta(seconds=s) for s in (30, 20, 10))
    create = ghl_event(
        "ContactCreate", id="c-ooo", firstName="Ann", email="ann@one.test", timestamp=_iso(t0)
    )
    older = ghl_event(
        "ContactUpdate",
        id="c-ooo",
        email="ann@two.test",
        tags=["warm"],
        dnd=False,
        timestamp=_iso(t1),
    )
    newer = ghl_event(
        "ContactDndUpdate",
        id="c-ooo",
        email="ann@three.test",
        tags=["cold"],
        dnd=True,
        timestamp=_iso(t2),
    )
    # when the newest arrives first and the others later, the two updates at once
    assert post_ghl(tenant.slug, newer).status_code == 200
    wait_for(_webhooks_done, describe=_webhook_states)
    at_once(lambda: post_ghl(tenant.slug, older), lambda: post_ghl(tenant.slug, create))
    wait_for(_webhooks_done, describe=_webhook_states)
    # then the lead holds the newest state; the older events are kept, marked not applied
    lead = Lead.objects.get(tenant=tenant, external_id="c-ooo")
    assert (lead.email, lead.tags, lead.dnd) == ("ann@three.test", ["cold"], True)
    assert lead.crm_updated_at == t2
    states = {e.webhook_id: (e.status, e.error) for e in WebhookEvent.objects.filter(tenant=tenant)}
    assert states[newer["webhookId"]][0] == WebhookStatus.PROCESSED
    for stale in (older, create):
        status, note = states[stale["webhookId"]]
        assert status == WebhookStatus.IGNORED and "older than" in note, note
    # and a genuinely newer update still applies
    later = ghl_event("ContactUpdate", id="c-ooo", email="ann@four.test", dnd=False)
    assert post_ghl(tenant.slug, later).status_code == 200
    wait_for(_webhooks_done, describe=_webhook_states)
    lead.refresh_from_db()
    assert (lead.email, lead.tags, lead.dnd) == ("ann@four.test", ["cold"], False)


# --- provider callbacks and engagement ---------------------------------------------------


def _twilio_callback(tenant, message, token: str, status: str) -> int:
    path = f"/api/notifications/callbacks/twilio/{tenant.slug}/status/?mid={message.pk}"
    params = {"MessageSid": message.provider_message_id, "MessageStatus": status}
    signature = twilio_signature(auth_token=token, url="http://testserver" + path, params=params)
    return Client().post(path, params, HTTP_X_TWILIO_SIGNATURE=signature).status_code


def test_twilio_callbacks_twice_and_out_of_order_are_counted_once(
    other_tenant, providers, storm_worker
):
    # given an SMS the worker sent through Twilio
    other_wire(other_tenant, providers)
    [lead] = leads_make(tenant=other_tenant, n=1)
    with transaction.atomic():
        message = message_request(
            tenant=other_tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="cb-1",
        )
    wait_for(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.SENT)
    message.refresh_from_db()
    token = providers.twilio.auth_token
    # when 'delivered' arrives three times at once, then a late 'sent' and 'queued' twice
    codes = at_once(*[lambda: _twilio_callback(other_tenant, message, token, "delivered")] * 3)
    codes += at_once(
        lambda: _twilio_callback(other_tenant, message, token, "sent"),
        lambda: _twilio_callback(other_tenant, message, token, "sent"),
        lambda: _twilio_callback(other_tenant, message, token, "queued"),
    )
    # then everything was acknowledged, the status never went back, and each distinct
    # report is one event; tracking logged the delivery once
    assert codes == [204] * 6
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert Counter(
        MessageEvent.objects.filter(message=message).values_list("status", flat=True)
    ) == {
        "delivered": 1,
        "sent": 1,
        "": 1,
    }
    kinds = Counter(
        TrackingEvent.objects.filter(message_id=message.pk).values_list("kind", flat=True)
    )
    assert kinds[EventKind.MESSAGE_DELIVERED] == 1 and kinds[EventKind.MESSAGE_SENT] == 1
    assert len([r for r in providers.twilio.requests if r.method == "POST"]) == 1


def test_repeated_open_and_click_hits_count_once(tenant, providers, storm_worker):
    # given an email with one link, sent through GHL
    acme_wire(tenant, providers)
    template_make(
        tenant,
        "email",
        key="listing",
        body_html='<p>Hi {{ lead.first_name }}, <a href="https://homes.test/l/9">see it</a></p>',
    )
    [lead] = leads_make(tenant=tenant, n=1, fakes=providers)
    with transaction.atomic():
        message = message_request(
            tenant=tenant,
            channel="email",
            lead=lead,
            template_key="listing",
            context={},
            idempotency_key="eng-1",
        )
    wait_for(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.SENT)
    client = Client()
    pixel, link = open_pixel_url(message.pk), click_url(message.pk, "https://homes.test/l/9")
    # when the pixel loads four times at once (image proxies, re-opens) and the link is
    # clicked three times at once (scanners, double clicks)
    answers = at_once(*[lambda: client.get(pixel)] * 4, *[lambda: client.get(link)] * 3)
    # then
    assert [a.status_code for a in answers] == [200] * 4 + [302] * 3
    events = Counter(MessageEvent.objects.filter(message=message).values_list("kind", flat=True))
    assert events == {"opened": 1, "clicked": 1}
    activities = Counter(LeadActivity.objects.filter(lead=lead).values_list("kind", flat=True))
    assert activities["email_open"] == 1 and activities["email_click"] == 1
    kinds = Counter(
        TrackingEvent.objects.filter(message_id=message.pk).values_list("kind", flat=True)
    )
    assert kinds[EventKind.MESSAGE_OPENED] == 1 and kinds[EventKind.MESSAGE_CLICKED] == 1
    assert Message.objects.get(pk=message.pk).status == MessageStatus.CLICKED


# --- beat firing the same slot twice -----------------------------------------------------


def _fire(task: str, *args, times: int = 3, queue: str | None = None) -> None:
    for _ in range(times):
        app.send_task(task, args=list(args), queue=queue)


def test_a_duplicate_beat_fire_of_rescoring_and_outcome_evaluation_does_the_work_once(
    tenant, storm_worker
):
    # given leads from engaged to long silent, never scored
    now = timezone.now()
    leads = _history(tenant, 12, now)
    slot = slot_for(now).isoformat()
    # when beat's hourly rescore fires twice and a redelivery repeats the tenant's slot
    _fire("churnapp.rescore_all_tenants", times=2, queue="scoring")
    _fire("churnapp.rescore_tenant", tenant.pk, slot, times=2, queue="scoring")
    wait_for(
        lambda: ScoringRun.objects.filter(tenant=tenant, finished_at__isnull=False).exists(),
        describe=lambda: list(ScoringChunk.objects.values_list("status", "error")),
    )
    wait_for(lambda: _queues_idle(["scoring", "interventions"]), timeout=60)
    # then one run, each chunk once, each lead scored once
    [run] = ScoringRun.objects.filter(tenant=tenant)
    assert run.slot == slot_for(now)
    assert run.chunks_done == run.chunks_total == ScoringChunk.objects.filter(run=run).count()
    assert set(ScoringChunk.objects.filter(run=run).values_list("status", flat=True)) == {
        ScoringChunkStatus.DONE
    }
    assert run.leads_scored == len(leads)
    per_lead = Counter(
        TrackingEvent.objects.filter(kind=EventKind.TIER_CHANGED).values_list("lead_id", flat=True)
    )
    assert per_lead and set(per_lead.values()) == {1}
    started = Counter(Intervention.objects.values_list("lead_id", flat=True))
    assert started and set(started.values()) == {1}
    assert TrackingEvent.objects.filter(kind=EventKind.INTERVENTION_STARTED).count() == len(started)
    messages = Counter(Message.objects.values_list("idempotency_key", flat=True))
    assert set(messages.values()) <= {1}

    # given every window has closed
    Intervention.objects.update(window_ends_at=timezone.now() - dt.timedelta(minutes=1))
    first_stage = list(Intervention.objects.values_list("pk", flat=True))
    # when the evaluator fires three times at once
    _fire("interventions.evaluate_windows", times=3, queue="interventions")
    wait_for(
        lambda: (
            not Intervention.objects.filter(
                pk__in=first_stage, status__in=["planned", "active", "engaged"]
            ).exists()
        )
    )
    wait_for(lambda: _queues_idle(["interventions"]), timeout=60)
    # then each window was resolved once, and each escalation started once
    outcomes = Counter(
        TrackingEvent.objects.filter(kind=EventKind.OUTCOME_RECORDED).values_list(
            "intervention_id", flat=True
        )
    )
    assert set(outcomes) == set(first_stage) and set(outcomes.values()) == {1}
    assert set(
        Intervention.objects.filter(pk__in=first_stage).values_list("status", flat=True)
    ) == {InterventionStatus.RESOLVED}
    stages = Counter(Intervention.objects.values_list("lead_id", "episode", "stage"))
    assert set(stages.values()) == {1}
    escalated = Intervention.objects.exclude(pk__in=first_stage).count()
    assert (
        TrackingEvent.objects.filter(kind=EventKind.INTERVENTION_STARTED).count()
        == len(first_stage) + escalated
    )


def _queues_idle(queues: list[str]) -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return all(client.llen(q) == 0 for q in queues) and client.hlen("unacked") == 0
    finally:
        client.close()


def test_a_duplicate_sweeper_fire_sends_each_lost_message_once(
    tenant, providers, storm_worker, monkeypatch, storm_settings
):
    # given messages on every acme channel whose enqueue was lost (the process died
    # between commit and publish)
    acme_wire(tenant, providers)
    leads = leads_make(tenant=tenant, n=3, fakes=providers)
    storm_settings.NOTIFICATIONS_SWEEP_AFTER_SECONDS = 0
    with monkeypatch.context() as crash:
        # The fault: the publish after commit never happens.
        crash.setattr(messages_service, "message_enqueue_on_commit", lambda **kwargs: None)
        rows = [
            message_request(
                tenant=tenant,
                channel=channel,
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=f"lost-{channel}-{lead.pk}",
            )
            for lead in leads
            for channel in ("sms", "email", "ghl_workflow", "ghl_task", "in_app", "push")
        ]
    assert providers.ghl.requests == [] and Message.objects.filter(status="queued").count() == 18
    # when beat's sweeper fires three times at once
    _fire("notifications.outbox_sweep", times=3, queue="default")
    # then each message went out once
    wait_for(settled([tenant]), describe=unsettled([tenant]))
    ledger = ledger_check(providers, rows)
    print(f"\n{ledger.line('duplicate sweeper fire')}")
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
    assert ledger.went_out == len(rows)


def test_a_duplicate_rollup_of_the_same_day_writes_each_row_once(tenant, storm_worker):
    # given a day with interventions and messages
    now = timezone.now()
    _history(tenant, 8, now)
    _fire("churnapp.rescore_tenant", tenant.pk, slot_for(now).isoformat(), times=1)
    wait_for(lambda: ScoringRun.objects.filter(finished_at__isnull=False).exists())
    wait_for(lambda: _queues_idle(["scoring", "interventions", "sms", "email"]), timeout=60)
    assert Intervention.objects.exists()
    today = timezone.now().date()
    # when the same day is rolled up twice at once (a repeated beat fire)
    first, second = at_once(
        lambda: rollup_days(tenant_id=tenant.pk, first_day=today, last_day=today),
        lambda: rollup_days(tenant_id=tenant.pk, first_day=today, last_day=today),
    )
    # then the rows are those of one rollup, and a third run restates the same numbers
    assert first == second
    rows = list(InterventionDailyRollup.objects.filter(tenant=tenant).values())
    messages = list(MessageDailyRollup.objects.filter(tenant=tenant).values())
    assert len(rows) == first["interventions"] and len(messages) == first["messages"]
    assert sum(r["started"] for r in rows) == Intervention.objects.count()
    assert rollup_days(tenant_id=tenant.pk, first_day=today, last_day=today) == first
    # and the beat task for yesterday, fired twice, leaves one mark per day
    _fire("tracking.tenant_daily", tenant.pk, times=2, queue="default")
    wait_for(lambda: _queues_idle(["default"]), timeout=60)
    days = Counter(RollupDay.objects.filter(tenant=tenant).values_list("day", flat=True))
    assert days and set(days.values()) == {1}
