"""The send pipeline against the fakes: retries, Retry-After, unknown outcomes, fallback,
suppression at send time, shared rate limits, the sweeper and reconciliation."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from notifications.models import DeliveryAttempt, Message, MessageStatus, Suppression
from notifications.services import message_request, suppression_add
from notifications.services.sending import message_send, outbox_sweep
from notifications.signals import message_status_changed, recipient_opted_out
from tests.fakes.http import Answer
from tests.notifications.conftest import ghl_config, template_make, twilio_config

pytestmark = pytest.mark.django_db

GHL_SMS = "notifications.backends.ghl.GhlSmsBackend"
GHL_EMAIL = "notifications.backends.ghl.GhlEmailBackend"


@pytest.fixture
def ghl_sms(tenant, ghl_fake):
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    ghl_config(tenant, ghl_fake, "email", GHL_EMAIL)
    template_make(tenant, "sms")
    template_make(tenant, "email")
    return ghl_fake


def _sms(tenant, lead, key="k1", **kwargs) -> Message:
    return message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key=key,
        **kwargs,
    )


def _run(message: Message):
    outcome = message_send(message_id=message.pk)
    message.refresh_from_db()
    return outcome


def _signals(signal):
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    signal.connect(receiver, weak=False)
    return seen, lambda: signal.disconnect(receiver)


def test_transient_5xx_is_retried_with_backoff_and_the_same_idempotency_key(tenant, lead, ghl_sms):
    # given the provider fails twice, then accepts
    ghl_sms.program(Answer(503, body={"message": "busy"}), Answer(502))
    message = _sms(tenant, lead)
    # when
    first = _run(message)
    # then the message waits for its retry
    assert first.action == "retry" and first.countdown > 0
    assert message.status == MessageStatus.QUEUED and message.attempts == 1
    assert message.next_attempt_at > timezone.now() - dt.timedelta(seconds=1)
    # a retry before its time does nothing
    if message.next_attempt_at > timezone.now():
        assert _run(message).action == "defer"
    Message.objects.filter(pk=message.pk).update(next_attempt_at=None)
    assert _run(message).action == "retry"
    Message.objects.filter(pk=message.pk).update(next_attempt_at=None)
    assert _run(message).action == "done"
    assert message.status == MessageStatus.SENT and message.attempts == 3
    assert [
        a.outcome for a in DeliveryAttempt.objects.filter(message=message).order_by("number")
    ] == [
        "transient",
        "transient",
        "sent",
    ]
    assert {r.headers["idempotency-key"] for r in ghl_sms.requests} == {"k1"}


def test_429_retry_after_is_honoured(tenant, lead, ghl_sms):
    ghl_sms.program(Answer(429, headers={"Retry-After": "0.45"}, body={"message": "slow down"}))
    message = _sms(tenant, lead)
    before = timezone.now()
    outcome = _run(message)
    assert outcome.action == "retry" and outcome.countdown >= 0.45
    assert message.next_attempt_at >= before + dt.timedelta(seconds=0.45)
    assert DeliveryAttempt.objects.get(message=message).status_code == 429


def test_backoff_beyond_the_ceiling_is_left_to_the_sweeper(tenant, lead, ghl_sms, settings):
    # a Retry-After longer than the broker's visibility timeout allows for an ETA task
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 10}
    ghl_sms.program(Answer(429, headers={"Retry-After": "60"}))
    message = _sms(tenant, lead)
    outcome = _run(message)
    assert outcome.action == "done" and "sweeper" in outcome.detail
    assert message.status == MessageStatus.QUEUED
    assert message.next_attempt_at >= timezone.now() + dt.timedelta(seconds=55)


def test_timeout_after_the_request_went_out_is_unknown_and_never_resent(
    tenant, lead, ghl_sms, settings
):
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 0.3
    ghl_sms.program(Answer(hang=True))
    message = _sms(tenant, lead, fallback_channels=["email"])
    _run(message)
    assert message.status == MessageStatus.UNKNOWN and "no answer" in message.status_reason
    # running the task again (a redelivery) does not send again, and no fallback starts
    assert _run(message).action == "done"
    outbox_sweep()
    assert len(ghl_sms.requests) == 1
    assert not Message.objects.filter(fallback_of=message).exists()
    ghl_sms.release()


def test_permanent_failure_falls_back_to_the_next_channel_with_the_same_metadata(
    tenant, lead, ghl_sms
):
    # given
    ghl_sms.program(Answer(400, body={"message": "bad"}, method="POST"))
    seen, done = _signals(message_status_changed)
    try:
        message = _sms(tenant, lead, fallback_channels=["email"], metadata={"intervention_id": 12})
        # when
        _run(message)
    finally:
        done()
    # then
    assert message.status == MessageStatus.FAILED
    fallback = Message.objects.get(fallback_of=message)
    assert fallback.channel == "email" and fallback.idempotency_key == "k1:fb:email"
    assert fallback.metadata == {"intervention_id": 12} and fallback.status == MessageStatus.QUEUED
    assert "fell back to email" in message.status_reason and "400" in message.status_reason
    failed = [s for s in seen if s["new_status"] == "failed"]
    assert (
        failed[0]["metadata"] == {"intervention_id": 12}
        and failed[0]["previous_status"] == "sending"
    )
    # the fallback sends by email
    _run(fallback)
    assert fallback.status == MessageStatus.SENT and ghl_sms.requests[-1].json()["type"] == "Email"


def test_5xx_until_the_last_attempt_ends_dead_then_falls_back(tenant, lead, ghl_sms):
    ghl_sms.program(*[Answer(500) for _ in range(3)])
    message = _sms(tenant, lead, fallback_channels=["email"])
    Message.objects.filter(pk=message.pk).update(max_attempts=3)
    for _ in range(3):
        Message.objects.filter(pk=message.pk).update(next_attempt_at=None)
        _run(message)
    assert message.status == MessageStatus.DEAD and message.attempts == 3
    assert "gave up after 3 attempts" in message.status_reason
    assert Message.objects.get(fallback_of=message).channel == "email"


def test_suppressed_at_send_time_is_recorded_with_its_reason_and_falls_back(tenant, lead, ghl_sms):
    message = _sms(tenant, lead, fallback_channels=["email"])
    # the opt-out arrives after the message was planned
    suppression_add(
        tenant=tenant, channel="sms", address=lead.phone, reason="manual", note="asked on a call"
    )
    _run(message)
    assert message.status == MessageStatus.SUPPRESSED
    assert (
        message.status_reason.startswith("manual:") and "asked on a call" in message.status_reason
    )
    assert ghl_sms.requests == []
    assert Message.objects.get(fallback_of=message).channel == "email"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"dnd": True}, "ghl_dnd"),
        ({"dnd_channels": ["SMS"]}, "ghl_dnd"),
        ({"consent_sms": False}, "no_consent"),
    ],
)
def test_ghl_dnd_and_consent_suppress_sms(tenant, lead, ghl_sms, change, reason):
    message = _sms(tenant, lead)
    for name, value in change.items():
        setattr(lead, name, value)
    lead.save()
    _run(message)
    assert message.status == MessageStatus.SUPPRESSED and message.status_reason.startswith(reason)
    assert ghl_sms.requests == []


def test_twilio_21610_suppresses_the_number_and_signals_opt_out(tenant, lead, twilio_fake):
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    twilio_fake.opted_out.add(lead.phone)
    seen, done = _signals(recipient_opted_out)
    try:
        message = _sms(tenant, lead)
        _run(message)
    finally:
        done()
    assert message.status == MessageStatus.SUPPRESSED
    assert (
        Suppression.objects.get(tenant=tenant, channel="sms", address=lead.phone).reason
        == "provider_opt_out"
    )
    assert seen == [
        {
            "tenant_id": tenant.pk,
            "lead_id": lead.pk,
            "channel": "sms",
            "reason": "provider_opt_out",
            "signal": recipient_opted_out,
        }
    ]


def test_shared_rate_limit_defers_without_counting_an_attempt(
    tenant, lead, ghl_sms, settings, redis_flushed
):
    # given a GHL location allowed 2 requests per 10 s
    settings.NOTIFICATIONS_RATE_LIMITS = {
        **settings.NOTIFICATIONS_RATE_LIMITS,
        "ghl": "2 per 10 seconds",
    }
    messages = [_sms(tenant, lead, key=f"rl-{i}") for i in range(3)]
    # when
    outcomes = [_run(m) for m in messages]
    # then the third waits for the window without touching the provider
    assert [o.action for o in outcomes] == ["done", "done", "defer"]
    assert 0 < outcomes[2].countdown <= 10
    third = messages[2]
    assert third.status == MessageStatus.QUEUED and third.attempts == 0
    assert not DeliveryAttempt.objects.filter(message=third).exists()
    assert len(ghl_sms.requests) == 2


def test_rate_limit_is_per_location(tenant, other_tenant, lead, ghl_fake, settings, redis_flushed):
    from churnapp.factories import AgentFactory, LeadFactory

    settings.NOTIFICATIONS_RATE_LIMITS = {
        **settings.NOTIFICATIONS_RATE_LIMITS,
        "ghl": "1 per 10 seconds",
    }
    tenant.ghl_location_id, other_tenant.ghl_location_id = "loc-a", "loc-b"
    tenant.save()
    other_tenant.save()
    other_lead = LeadFactory(tenant=other_tenant, assigned_agent=AgentFactory(tenant=other_tenant))
    for t in (tenant, other_tenant):
        ghl_config(t, ghl_fake, "sms", GHL_SMS)
        template_make(t, "sms")
    a = _sms(tenant, lead, key="a")
    b = message_request(
        tenant=other_tenant,
        channel="sms",
        lead=other_lead,
        template_key="checkin",
        context={},
        idempotency_key="b",
    )
    assert _run(a).action == "done" and _run(b).action == "done"
    assert len(ghl_fake.requests) == 2


def test_sweeper_turns_a_stale_sending_claim_into_unknown_not_queued(
    tenant, lead, ghl_sms, settings
):
    # the worker counted its attempt (committed just before the provider call), then died
    message = _sms(tenant, lead)
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.SENDING,
        claimed_at=timezone.now() - dt.timedelta(minutes=10),
        claimed_by="w1:42",
        attempts=1,
    )
    result = outbox_sweep()
    message.refresh_from_db()
    assert result.stale_to_unknown == 1
    assert message.status == MessageStatus.UNKNOWN and "w1:42" in message.status_reason
    assert ghl_sms.requests == []


def test_sweeper_requeues_a_stale_claim_whose_worker_died_before_calling(
    tenant, lead, ghl_sms, settings, redis_flushed
):
    # given a claim whose worker died before counting an attempt: no call was made
    message = _sms(tenant, lead)
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.SENDING,
        claimed_at=timezone.now() - dt.timedelta(minutes=10),
        claimed_by="w1:42",
        claim_token=uuid.uuid4(),
    )
    # when
    result = outbox_sweep()
    # then it is queued again, and its send task published
    message.refresh_from_db()
    assert (result.stale_requeued, result.stale_to_unknown) == (1, 0)
    assert message.status == MessageStatus.QUEUED and message.claim_token is None
    assert "before calling the provider" in message.status_reason
    queued = redis_flushed.lrange("sms", 0, -1)
    assert len(queued) == 1 and f"[{message.pk}]".encode() in queued[0]


def test_sweeper_re_enqueues_queued_messages_whose_task_was_lost(
    tenant, lead, ghl_sms, redis_flushed
):
    due = _sms(tenant, lead, key="due")
    later = _sms(tenant, lead, key="later", not_before=timezone.now() + dt.timedelta(hours=1))
    fresh = _sms(tenant, lead, key="fresh")
    old = timezone.now() - dt.timedelta(minutes=10)
    Message.objects.filter(pk__in=[due.pk, later.pk]).update(updated_at=old)
    result = outbox_sweep()
    assert result.enqueued == 1
    queued = redis_flushed.lrange("sms", 0, -1)
    assert len(queued) == 1 and f"[{due.pk}]".encode() in queued[0]
    assert fresh.pk != due.pk


def test_sweeper_reconciles_an_unknown_twilio_message_from_the_provider(
    tenant, lead, twilio_fake, settings
):
    # given a send whose answer was lost although Twilio accepted it
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 0.3
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    twilio_fake.program(Answer(hang=True, method="POST"))
    message = _sms(tenant, lead)
    _run(message)
    assert message.status == MessageStatus.UNKNOWN
    twilio_fake.release()
    # Twilio holds the message (as if the hung request had gone through)
    twilio_fake.messages["SMabc"] = {
        "sid": "SMabc",
        "to": lead.phone,
        "body": message.body_text,
        "status": "delivered",
        "price": "-0.0079",
        "price_unit": "USD",
        "date_created": None,
    }
    # when
    result = outbox_sweep()
    # then
    message.refresh_from_db()
    assert result.reconciled == 1
    assert message.status == MessageStatus.DELIVERED and message.provider_message_id == "SMabc"
    assert str(message.cost) == "0.00790"
    assert len(twilio_fake.requests_to("POST")) == 1


def test_unknown_without_a_provider_answer_stays_unknown(tenant, lead, twilio_fake, settings):
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 0.3
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    twilio_fake.program(Answer(hang=True, method="POST"))
    message = _sms(tenant, lead)
    _run(message)
    twilio_fake.release()
    result = outbox_sweep()
    message.refresh_from_db()
    assert result.still_unknown == 1 and message.status == MessageStatus.UNKNOWN
    assert len(twilio_fake.requests_to("POST")) == 1


def test_twilio_checks_before_retrying_after_a_5xx(tenant, lead, twilio_fake):
    # given Twilio answered 500 but had in fact queued the message
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    message = _sms(tenant, lead)
    twilio_fake.program(Answer(500, method="POST"))
    _run(message)
    assert message.status == MessageStatus.QUEUED
    twilio_fake.messages["SMsent"] = {
        "sid": "SMsent",
        "to": lead.phone,
        "body": message.body_text,
        "status": "sent",
    }
    # when the retry runs
    Message.objects.filter(pk=message.pk).update(next_attempt_at=None)
    _run(message)
    # then it found the message instead of posting again
    assert message.status == MessageStatus.SENT and message.provider_message_id == "SMsent"
    assert len(twilio_fake.requests_to("POST")) == 1


def test_our_shared_limiter_keeps_ghl_from_answering_429(
    tenant, lead, ghl_fake, settings, redis_flushed
):
    # given GHL enforcing 3 requests per 10 s for the location, and our limiter set to match
    ghl_fake.rate_limit = 3
    settings.NOTIFICATIONS_RATE_LIMITS = {
        **settings.NOTIFICATIONS_RATE_LIMITS,
        "ghl": "3 per 10 seconds",
    }
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    template_make(tenant, "sms")
    messages = [_sms(tenant, lead, key=f"burst-{i}") for i in range(5)]
    outcomes = [_run(m) for m in messages]
    assert [o.action for o in outcomes] == ["done", "done", "done", "defer", "defer"]
    assert len(ghl_fake.requests) == 3


def test_without_our_limiter_ghls_429_is_retried_after_its_window(tenant, lead, ghl_fake, settings):
    ghl_fake.rate_limit = 1
    settings.NOTIFICATIONS_RATE_LIMITS = {**settings.NOTIFICATIONS_RATE_LIMITS, "ghl": None}
    ghl_config(tenant, ghl_fake, "sms", GHL_SMS)
    template_make(tenant, "sms")
    first, second = _sms(tenant, lead, key="a"), _sms(tenant, lead, key="b")
    assert _run(first).action == "done"
    _run(second)
    # GHL's Retry-After (seconds), not our 0.05 s base backoff, decides the next attempt
    assert second.status == MessageStatus.QUEUED
    assert second.next_attempt_at > timezone.now() + dt.timedelta(seconds=5)
    assert DeliveryAttempt.objects.get(message=second).status_code == 429


def test_a_rate_limiter_that_cannot_reach_redis_gives_the_claim_back(
    tenant, lead, ghl_sms, settings
):
    # given Redis (the rate limiter's store) refusing connections
    from redis.exceptions import ConnectionError as RedisConnectionError

    from config.services import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    message = _sms(tenant, lead)
    # when the send fails before any provider call
    with pytest.raises(RedisConnectionError):
        message_send(message_id=message.pk)
    # then the row is queued again, not left claimed (which would end in unknown)
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED and message.claim_token is None
    assert message.attempts == 0 and ghl_sms.requests == []


def test_a_worker_whose_stale_claim_was_requeued_does_not_call_the_provider(
    tenant, lead, ghl_sms, settings, redis_flushed
):
    from notifications.services.sending import _call_prepare, message_claim_for_send

    # given a worker that claimed a message and then stalled before counting its attempt,
    # long enough for the sweeper to take the claim back and queue the message again
    message = _sms(tenant, lead)
    token = uuid.uuid4()
    assert message_claim_for_send(message_id=message.pk, token=token, worker="slow:1")
    Message.objects.filter(pk=message.pk).update(
        claimed_at=timezone.now() - dt.timedelta(minutes=10)
    )
    assert outbox_sweep().stale_requeued == 1
    # when the stalled worker goes on
    outcome = _call_prepare(message_id=message.pk, token=token)
    # then it stops short of the provider; the message is queued for another worker
    assert outcome.action == "done" and "taken back" in outcome.detail
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED and message.attempts == 0
    assert ghl_sms.requests == []
