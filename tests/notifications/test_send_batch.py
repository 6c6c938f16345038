"""The batch send path: one claim for many messages of a tenant and channel, each sent
once, failures settled one by one, a crash mid-batch left to the sweeper."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter

import pytest
from django.utils import timezone

from churnapp.factories import LeadFactory
from notifications.backends.twilio import TwilioSmsBackend
from notifications.models import DeliveryAttempt, Message, MessageStatus
from notifications.services import message_request, message_status_record
from notifications.services.messages import messages_enqueue
from notifications.services.sending import message_send_batch, outbox_sweep
from notifications.signals import message_status_changed, message_statuses_changed
from tests.fakes.http import Answer
from tests.notifications.conftest import ALL_QUEUES, template_make, twilio_config, wait_for
from tracking.models import TrackingEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def twilio_sms(tenant, twilio_fake):
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    template_make(tenant, "email")
    return twilio_fake


def _plan(tenant, agent, n: int, key: str = "b", **kwargs) -> list[Message]:
    messages = []
    for i in range(n):
        lead = LeadFactory(tenant=tenant, assigned_agent=agent, phone=f"+1512777{i:04d}")
        messages.append(
            message_request(
                tenant=tenant,
                channel="sms",
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=f"{key}-{i}",
                **kwargs,
            )
        )
    return messages


def _posts_by_number(fake) -> Counter:
    return Counter(r.form()["To"] for r in fake.requests_to("POST"))


def test_a_batch_sends_each_message_once_with_its_attempt_signal_and_lifecycle_event(
    tenant, agent, twilio_sms, settings
):
    # given 23 queued messages (more than two chunks of 10)
    settings.NOTIFICATIONS_SEND_CHUNK_SIZE = 10
    messages = _plan(tenant, agent, 23)
    seen, one_by_one = [], []

    def receiver(sender, *, changes, **kwargs):
        # one signal per chunk, with each message's change
        seen.append([(c["message_id"], c["previous_status"], c["new_status"]) for c in changes])

    def single(sender, **kwargs):
        one_by_one.append(kwargs["message_id"])

    message_statuses_changed.connect(receiver, weak=False)
    message_status_changed.connect(single, weak=False)
    try:
        # when one batch takes them all
        outcome = message_send_batch(
            tenant_id=tenant.pk, channel="sms", message_ids=[m.pk for m in messages]
        )
    finally:
        message_statuses_changed.disconnect(receiver)
        message_status_changed.disconnect(single)
    # then every one went out once and is on record as sent
    ids = [m.pk for m in messages]
    assert (outcome.claimed, outcome.sent, outcome.later) == (23, 23, [])
    assert set(_posts_by_number(twilio_sms).values()) == {1}
    assert len(_posts_by_number(twilio_sms)) == 23
    rows = Message.objects.filter(pk__in=ids)
    assert {(m.status, m.attempts, m.claim_token) for m in rows} == {("sent", 1, None)}
    assert all(m.sent_at and m.provider_message_id.startswith("SM") for m in rows)
    attempts = DeliveryAttempt.objects.filter(message_id__in=ids)
    assert sorted(a.message_id for a in attempts) == ids
    assert {(a.number, a.outcome) for a in attempts} == {(1, "sent")}
    assert [len(chunk) for chunk in seen] == [10, 10, 3]
    assert sorted(c for chunk in seen for c in chunk) == [(pk, "sending", "sent") for pk in ids]
    assert one_by_one == []
    events = TrackingEvent.objects.filter(kind="message_sent", message_id__in=ids)
    assert sorted(e.message_id for e in events) == ids
    # and a second batch over the same ids does nothing
    again = message_send_batch(tenant_id=tenant.pk, channel="sms", message_ids=ids)
    assert again.claimed == 0 and len(twilio_sms.requests_to("POST")) == 23


def test_one_failing_message_does_not_affect_the_others_in_its_batch(
    tenant, agent, twilio_sms, settings
):
    # given 6 messages: the provider answers the first request 503 and knows the fourth
    # number as opted out; the sixth lead has no SMS consent
    messages = _plan(tenant, agent, 6, fallback_channels=["email"])
    twilio_sms.program(Answer(503, body={"message": "busy"}, method="POST"))
    twilio_sms.opted_out.add(messages[3].to_address)
    lead = messages[5].lead
    lead.consent_sms = False
    lead.save()
    # when
    outcome = message_send_batch(
        tenant_id=tenant.pk, channel="sms", message_ids=[m.pk for m in messages]
    )
    # then the others went out once each
    for m in messages:
        m.refresh_from_db()
    assert [m.status for m in messages] == [
        MessageStatus.QUEUED,  # transient: its retry waits for its own task
        MessageStatus.SENT,
        MessageStatus.SENT,
        MessageStatus.SUPPRESSED,  # Twilio 21610
        MessageStatus.SENT,
        MessageStatus.SUPPRESSED,  # no consent: never called
    ]
    assert [pk for pk, _ in outcome.later] == [messages[0].pk]
    assert messages[0].attempts == 1 and messages[0].next_attempt_at is not None
    assert messages[5].attempts == 0 and "no_consent" in messages[5].status_reason
    posts = _posts_by_number(twilio_sms)
    assert messages[5].to_address not in posts
    assert all(posts[m.to_address] == 1 for m in messages[:5])
    assert [
        a.outcome for a in DeliveryAttempt.objects.filter(message__in=messages).order_by("message")
    ] == ["transient", "sent", "sent", "suppressed", "sent"]
    # the suppressed ones fell back to email, as single sends do
    assert Message.objects.filter(fallback_of__in=[messages[3], messages[5]]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_callback_during_the_chunk_is_kept_and_its_message_not_settled_again(
    tenant, agent, twilio_sms, monkeypatch
):
    # given 4 queued messages, and a provider whose delivery report for the second one
    # commits (on its own connection) while the chunk is still calling for the others
    messages = _plan(tenant, agent, 4)
    early = messages[1]
    send = TwilioSmsBackend.send

    def send_then_report(self, message):
        result = send(self, message)
        if message.pk == early.pk:
            thread = threading.Thread(target=_report_delivered, args=(early.pk,))
            thread.start()
            thread.join()
        return result

    monkeypatch.setattr(TwilioSmsBackend, "send", send_then_report)
    # when one batch sends them all
    outcome = message_send_batch(tenant_id=tenant.pk, channel="sms")
    # then the report stands (not moved back to sent, nor counted as settled here), with
    # the provider's id kept and its attempt on record; the others are sent
    assert (outcome.claimed, outcome.sent, outcome.done) == (4, 3, 4)
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[m.pk for m in messages])}
    assert rows[early.pk].status == MessageStatus.DELIVERED
    assert rows[early.pk].provider_message_id.startswith("SM")
    assert rows[early.pk].claim_token is None
    assert {rows[m.pk].status for m in messages if m.pk != early.pk} == {MessageStatus.SENT}
    assert DeliveryAttempt.objects.filter(message_id=early.pk).count() == 1


def _report_delivered(message_id: int) -> None:
    from django.db import connection

    try:
        assert message_status_record(message_id=message_id, new_status="delivered")
    finally:
        connection.close()


def test_a_batch_claims_only_its_tenants_due_queued_messages(
    tenant, other_tenant, agent, twilio_sms
):
    from churnapp.factories import AgentFactory

    # given a due message, one scheduled for later, one already sent, and another
    # tenant's message whose id is passed by mistake
    due, later = _plan(tenant, agent, 2)
    Message.objects.filter(pk=later.pk).update(not_before=timezone.now() + dt.timedelta(hours=1))
    (done,) = _plan(tenant, agent, 1, key="done")
    Message.objects.filter(pk=done.pk).update(status=MessageStatus.SENT)
    twilio_config(other_tenant, twilio_sms)
    template_make(other_tenant, "sms")
    (foreign,) = _plan(other_tenant, AgentFactory(tenant=other_tenant), 1, key="x")
    # when
    outcome = message_send_batch(
        tenant_id=tenant.pk, channel="sms", message_ids=[due.pk, later.pk, done.pk, foreign.pk]
    )
    # then only the due one of this tenant went out
    assert outcome.claimed == 1 and outcome.sent == 1
    assert len(twilio_sms.requests_to("POST")) == 1
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[due.pk] == "sent" and statuses[later.pk] == "queued"
    assert statuses[foreign.pk] == "queued"


def test_the_rate_limit_gives_back_what_the_window_cannot_take(
    tenant, agent, twilio_sms, settings, redis_flushed
):
    # given an account allowed 3 messages per 10 s, and 5 queued
    settings.NOTIFICATIONS_RATE_LIMITS = {
        **settings.NOTIFICATIONS_RATE_LIMITS,
        "twilio": "3 per 10 seconds",
    }
    messages = _plan(tenant, agent, 5)
    # when
    outcome = message_send_batch(
        tenant_id=tenant.pk, channel="sms", message_ids=[m.pk for m in messages]
    )
    # then 3 went out; 2 wait for the window, queued, no attempt counted
    assert outcome.sent == 3 and len(twilio_sms.requests_to("POST")) == 3
    assert [pk for pk, _ in outcome.later] == [m.pk for m in messages[3:]]
    assert all(0 < wait <= 10 for _, wait in outcome.later)
    for m in messages[3:]:
        m.refresh_from_db()
        assert m.status == MessageStatus.QUEUED and m.attempts == 0 and m.claim_token is None
        assert m.next_attempt_at > timezone.now()


def test_a_claim_takes_no_more_than_its_limit(tenant, agent, twilio_sms):
    from notifications.services.sending import messages_claim_for_send

    # given 25 queued messages
    ids = [m.pk for m in _plan(tenant, agent, 25)]
    # when two claims of 10 are made
    first, second = (
        messages_claim_for_send(
            tenant_id=tenant.pk,
            channel="sms",
            token=uuid.uuid4(),
            worker="w:1",
            limit=10,
            message_ids=ids,
        )
        for _ in range(2)
    )
    # then each holds the next 10 by id, and 5 stay queued
    assert first == ids[:10] and second == ids[10:20]
    assert Message.objects.filter(pk__in=ids, status="queued").count() == 5


class WorkerDied(BaseException):
    """What a killed worker looks like from inside: nothing after it runs."""


def test_a_crash_mid_batch_leaves_claims_the_sweeper_settles_without_sending_twice(
    tenant, agent, twilio_sms, settings, monkeypatch
):
    # given 25 messages (chunks of 10) and a worker that dies on its 14th provider call,
    # after the request went out
    settings.NOTIFICATIONS_SEND_CHUNK_SIZE = 10
    messages = _plan(tenant, agent, 25)
    ids = [m.pk for m in messages]
    real_send, calls = TwilioSmsBackend.send, []

    def dying_send(self, message):
        calls.append(message.pk)
        result = real_send(self, message)
        if len(calls) == 14:
            raise WorkerDied
        return result

    monkeypatch.setattr(TwilioSmsBackend, "send", dying_send)
    with pytest.raises(WorkerDied):
        message_send_batch(tenant_id=tenant.pk, channel="sms", message_ids=ids)
    monkeypatch.setattr(TwilioSmsBackend, "send", real_send)
    status = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    # the first chunk settled; the second (counted, partly sent) is held; the third was
    # never claimed
    assert [status[pk] for pk in ids[:10]] == ["sent"] * 10
    assert [status[pk] for pk in ids[10:20]] == ["sending"] * 10
    assert [status[pk] for pk in ids[20:]] == ["queued"] * 5
    # when the sweeper finds the claims stale
    Message.objects.filter(pk__in=ids, status="sending").update(
        claimed_at=timezone.now() - dt.timedelta(minutes=10)
    )
    result = outbox_sweep()
    # then the counted chunk may have gone out: unknown, never resent (the sweeper's
    # reconciliation finds at Twilio the 4 that did); the rest is sent once by the next
    # batch
    assert (result.stale_to_unknown, result.stale_requeued) == (10, 0)
    message_send_batch(tenant_id=tenant.pk, channel="sms", message_ids=ids)
    status = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [status[pk] for pk in ids[10:20]] == ["sent"] * 4 + ["unknown"] * 6
    assert [status[pk] for pk in ids[20:]] == ["sent"] * 5
    assert max(_posts_by_number(twilio_sms).values()) == 1
    assert len(_posts_by_number(twilio_sms)) == 14 + 5


@pytest.fixture
def threaded_worker(transactional_db, redis_flushed):
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    with start_worker(
        app, pool="threads", concurrency=4, perform_ping_check=False, queues=ALL_QUEUES
    ) as worker:
        yield worker


@pytest.mark.django_db(transaction=True)
def test_batches_published_twice_through_a_real_worker_send_each_message_once(
    tenant, other_tenant, twilio_fake, threaded_worker, settings
):
    from churnapp.factories import AgentFactory

    # given two tenants' outboxes (rows only: nothing published yet)
    settings.NOTIFICATIONS_SEND_BATCH_SIZE = 7
    rows = []
    for t, n in ((tenant, 20), (other_tenant, 9)):
        twilio_config(t, twilio_fake)
        someone = AgentFactory(tenant=t)
        for i in range(n):
            lead = LeadFactory(tenant=t, assigned_agent=someone, phone=f"+1512888{len(rows):04d}")
            rows.append(
                Message(
                    tenant=t,
                    lead=lead,
                    channel="sms",
                    body_text=f"Hi {i}",
                    to_address=lead.phone,
                    idempotency_key=f"outbox-{i}",
                )
            )
    ids = [m.pk for m in Message.objects.bulk_create(rows)]
    # when their sends are published as batches, twice (a duplicate publish races)
    assert messages_enqueue(message_ids=ids) == 3 + 2
    messages_enqueue(message_ids=ids)
    # then each went out once
    wait_for(lambda: Message.objects.filter(pk__in=ids, status="sent").count() == 29, 60)
    assert len(twilio_fake.requests_to("POST")) == 29
    assert max(_posts_by_number(twilio_fake).values()) == 1
    assert DeliveryAttempt.objects.filter(message_id__in=ids).count() == 29


@pytest.mark.parametrize("drain", [True, False])
def test_a_single_send_task_takes_its_tenants_other_due_messages_along(
    tenant, other_tenant, agent, twilio_sms, settings, drain
):
    from churnapp.factories import AgentFactory
    from notifications.tasks import message_send as message_send_task

    # given 12 due messages, one scheduled for later, and another tenant's message
    settings.NOTIFICATIONS_SEND_DRAIN = drain
    messages = _plan(tenant, agent, 12)
    (later,) = _plan(tenant, agent, 1, key="later")
    Message.objects.filter(pk=later.pk).update(not_before=timezone.now() + dt.timedelta(hours=1))
    twilio_config(other_tenant, twilio_sms)
    template_make(other_tenant, "sms")
    (foreign,) = _plan(other_tenant, AgentFactory(tenant=other_tenant), 1, key="x")
    # when the first message's task runs, then every other message's task
    message_send_task(messages[0].pk)
    statuses = dict(Message.objects.values_list("pk", "status"))
    # then with draining the first took the tenant's other due messages along
    expected = "sent" if drain else "queued"
    assert statuses[messages[0].pk] == "sent"
    assert {statuses[m.pk] for m in messages[1:]} == {expected}
    assert statuses[later.pk] == "queued" and statuses[foreign.pk] == "queued"
    for m in messages[1:]:
        message_send_task(m.pk)
    # and each went out once all the same
    assert Message.objects.filter(pk__in=[m.pk for m in messages], status="sent").count() == 12
    assert max(_posts_by_number(twilio_sms).values()) == 1
    assert DeliveryAttempt.objects.filter(message__in=messages).count() == 12
    assert Message.objects.get(pk=later.pk).status == "queued"
