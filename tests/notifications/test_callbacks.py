"""Callbacks and engagement: Twilio, GHL, anymail, in-app, open pixel, click, unsubscribe."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from django.test import Client
from django.utils import timezone

from churnapp.models import LeadActivity
from notifications.email_content import click_url, open_pixel_url, unsubscribe_url
from notifications.models import Message, MessageEvent, MessageStatus, Suppression
from notifications.services import message_request
from notifications.services.callbacks import _lock_and_store_sql
from notifications.services.sending import message_send
from notifications.signals import message_engaged, recipient_opted_out
from tests.fakes.inapp import sign
from tests.fakes.twilio import twilio_signature
from tests.notifications.conftest import channel_config, ghl_config, template_make, twilio_config

pytestmark = pytest.mark.django_db


def _signals(signal):
    seen = []

    def receiver(sender, **kwargs):
        kwargs.pop("signal", None)
        seen.append(kwargs)

    signal.connect(receiver, weak=False)
    return seen, lambda: signal.disconnect(receiver)


def _twilio_post(client: Client, path: str, params: dict, token: str, signature: str | None = None):
    url = "http://testserver" + path
    return client.post(
        path,
        params,
        HTTP_X_TWILIO_SIGNATURE=signature
        or twilio_signature(auth_token=token, url=url, params=params),
    )


@pytest.fixture
def twilio_sent(tenant, lead, twilio_fake):
    """An SMS sent through Twilio, waiting for its callbacks."""
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="tw-1",
        metadata={"intervention_id": 5},
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    return message


def _status_path(tenant, message) -> str:
    return f"/api/notifications/callbacks/twilio/{tenant.slug}/status/?mid={message.pk}"


def test_out_of_order_twilio_callbacks_leave_the_right_final_status(
    tenant, twilio_sent, twilio_fake
):
    client = Client()
    sid = twilio_sent.provider_message_id
    # delivered arrives before sent and queued; then a duplicate of delivered
    for status in ("delivered", "sent", "queued", "delivered"):
        response = _twilio_post(
            client,
            _status_path(tenant, twilio_sent),
            {"MessageSid": sid, "MessageStatus": status},
            twilio_fake.auth_token,
        )
        assert response.status_code == 204
    twilio_sent.refresh_from_db()
    assert twilio_sent.status == MessageStatus.DELIVERED and twilio_sent.delivered_at is not None
    # a late failure report cannot undo a delivery
    _twilio_post(
        client,
        _status_path(tenant, twilio_sent),
        {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": "30008"},
        twilio_fake.auth_token,
    )
    twilio_sent.refresh_from_db()
    assert twilio_sent.status == MessageStatus.DELIVERED
    assert (
        MessageEvent.objects.filter(message=twilio_sent).count() == 4
    )  # the duplicate was ignored


def test_undelivered_after_sent_marks_failed(tenant, twilio_sent, twilio_fake):
    client = Client()
    sid = twilio_sent.provider_message_id
    for status in ("undelivered", "sent"):
        _twilio_post(
            client,
            _status_path(tenant, twilio_sent),
            {"MessageSid": sid, "MessageStatus": status},
            twilio_fake.auth_token,
        )
    twilio_sent.refresh_from_db()
    assert twilio_sent.status == MessageStatus.FAILED


def test_bad_twilio_signature_is_rejected_and_nothing_changes(tenant, twilio_sent, twilio_fake):
    params = {"MessageSid": twilio_sent.provider_message_id, "MessageStatus": "delivered"}
    response = _twilio_post(Client(), _status_path(tenant, twilio_sent), params, "wrong-token")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "webhook_rejected"
    # a signature over other parameters does not pass either
    forged = twilio_signature(
        auth_token=twilio_fake.auth_token,
        url="http://testserver" + _status_path(tenant, twilio_sent),
        params={**params, "MessageStatus": "sent"},
    )
    assert (
        _twilio_post(
            Client(), _status_path(tenant, twilio_sent), params, "", signature=forged
        ).status_code
        == 401
    )
    twilio_sent.refresh_from_db()
    assert twilio_sent.status == MessageStatus.SENT


def test_stop_suppresses_every_later_sms_to_that_lead(tenant, lead, twilio_sent, twilio_fake):
    # given
    seen, done = _signals(recipient_opted_out)
    path = f"/api/notifications/callbacks/twilio/{tenant.slug}/inbound/"
    try:
        response = _twilio_post(
            Client(),
            path,
            {"MessageSid": "SMin1", "From": lead.phone, "To": "+15125550000", "Body": " stop "},
            twilio_fake.auth_token,
        )
    finally:
        done()
    assert response.status_code == 200 and b"<Response" in response.content
    assert seen == [
        {"tenant_id": tenant.pk, "lead_id": lead.pk, "channel": "sms", "reason": "opt_out_keyword"}
    ]
    # when two later SMS are planned
    later = [
        message_request(
            tenant=tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key=f"after-{i}",
        )
        for i in range(2)
    ]
    for message in later:
        message_send(message_id=message.pk)
    # then none reaches Twilio
    assert {m.status for m in Message.objects.filter(pk__in=[m.pk for m in later])} == {
        MessageStatus.SUPPRESSED
    }
    assert len(twilio_fake.requests_to("POST")) == 1
    assert LeadActivity.objects.filter(lead=lead, kind="sms_inbound").count() == 1


def test_start_resubscribes_and_help_is_answered(tenant, lead, twilio_sent, twilio_fake):
    path = f"/api/notifications/callbacks/twilio/{tenant.slug}/inbound/"
    client = Client()
    _twilio_post(
        client,
        path,
        {"MessageSid": "SM1", "From": lead.phone, "Body": "STOPALL"},
        twilio_fake.auth_token,
    )
    assert Suppression.objects.filter(address=lead.phone, lifted_at__isnull=True).exists()
    response = _twilio_post(
        client,
        path,
        {"MessageSid": "SM2", "From": lead.phone, "Body": "Start"},
        twilio_fake.auth_token,
    )
    assert not Suppression.objects.filter(address=lead.phone, lifted_at__isnull=True).exists()
    assert b"receive messages again" in response.content
    help_response = _twilio_post(
        client,
        path,
        {"MessageSid": "SM3", "From": lead.phone, "Body": "HELP"},
        twilio_fake.auth_token,
    )
    assert b"<Message>" in help_response.content and b"reply STOP" in help_response.content
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="again",
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT


def test_a_reply_becomes_lead_activity_and_marks_the_message_replied(
    tenant, lead, twilio_sent, twilio_fake
):
    seen, done = _signals(message_engaged)
    path = f"/api/notifications/callbacks/twilio/{tenant.slug}/inbound/"
    params = {"MessageSid": "SMreply", "From": lead.phone, "Body": "Yes, still looking!"}
    try:
        for _ in range(2):  # Twilio retried the webhook: the duplicate is ignored
            _twilio_post(Client(), path, params, twilio_fake.auth_token)
    finally:
        done()
    twilio_sent.refresh_from_db()
    assert twilio_sent.status == MessageStatus.REPLIED and twilio_sent.replied_at is not None
    activity = LeadActivity.objects.get(lead=lead, kind="sms_inbound")
    assert (
        activity.source_event_id == "twilio:SMreply"
        and activity.payload["body"] == "Yes, still looking!"
    )
    assert (
        len(seen) == 1
        and seen[0]["kind"] == "replied"
        and seen[0]["metadata"] == {"intervention_id": 5}
    )
    assert seen[0]["message_id"] == twilio_sent.pk and seen[0]["lead_id"] == lead.pk


def _ghl_post(post_ghl, tenant, payload: dict):
    """Through the one GHL front door: churnapp's signed webhook, processed in a task;
    the test runs the stored event's processing directly."""
    from churnapp.models import WebhookEvent
    from churnapp.services.webhooks import webhook_event_process

    response = post_ghl(tenant.slug, payload)
    assert response.status_code == 200, response.content
    event = WebhookEvent.objects.get(webhook_id=payload["webhookId"])
    webhook_event_process(webhook_event_id=event.pk)
    return response


def test_ghl_message_events_update_status_and_record_replies(
    tenant, lead, ghl_fake, post_ghl, django_capture_on_commit_callbacks
):
    # given an SMS sent through GHL
    tenant.ghl_location_id = "loc-1"
    tenant.save()
    ghl_config(tenant, ghl_fake, "sms", "notifications.backends.ghl.GhlSmsBackend")
    template_make(tenant, "sms")
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="g1",
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()
    base = {
        "locationId": "loc-1",
        "contactId": lead.external_id,
        "messageType": "SMS",
        "conversationId": "c1",
    }
    # when GHL reports delivery, then the lead's reply
    delivered = {
        **base,
        "type": "OutboundMessage",
        "direction": "outbound",
        "messageId": message.provider_message_id,
        "status": "delivered",
        "webhookId": "w1",
        "timestamp": timezone.now().isoformat(),
    }
    assert _ghl_post(post_ghl, tenant, delivered).status_code == 200
    reply = {
        **base,
        "type": "InboundMessage",
        "direction": "inbound",
        "messageId": "in-1",
        "body": "call me",
        "webhookId": "w2",
        "timestamp": timezone.now().isoformat(),
        "dateAdded": timezone.now().isoformat(),
    }
    _ghl_post(post_ghl, tenant, reply)
    # then
    message.refresh_from_db()
    assert message.status == MessageStatus.REPLIED and message.delivered_at is not None
    assert LeadActivity.objects.filter(
        lead=lead, kind="sms_inbound", source_event_id="in-1"
    ).exists()
    # and a STOP over GHL suppresses SMS too
    stop = {**reply, "messageId": "in-2", "body": "STOP", "webhookId": "w3"}
    _ghl_post(post_ghl, tenant, stop)
    assert Suppression.objects.filter(tenant=tenant, channel="sms", address=lead.phone).exists()


@pytest.fixture
def email_sent(tenant, lead):
    channel_config(tenant, "email", "notifications.backends.locmem.LocmemBackend")
    template_make(
        tenant,
        "email",
        body_html='<p><a href="https://homes.test/listing/9?a=1&amp;b=2">Listing</a></p>',
    )
    message = message_request(
        tenant=tenant,
        channel="email",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="em-1",
        metadata={"intervention_id": 8},
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()
    return message


def test_open_pixel_marks_opened_once(email_sent, lead):
    seen, done = _signals(message_engaged)
    path = open_pixel_url(email_sent.pk).replace("http://testserver", "")
    try:
        for _ in range(3):
            response = Client().get(path)
            assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    finally:
        done()
    email_sent.refresh_from_db()
    assert email_sent.status == MessageStatus.OPENED and len(seen) == 1
    assert LeadActivity.objects.filter(lead=lead, kind="email_open").count() == 1


def test_open_pixel_of_a_forged_token_or_deleted_message_is_refused(email_sent):
    # given: a valid pixel, a forged one, and one whose message has since been deleted
    path = open_pixel_url(email_sent.pk).replace("http://testserver", "")
    gone = Message.objects.create(
        tenant=email_sent.tenant,
        lead=email_sent.lead,
        channel=email_sent.channel,
        idempotency_key="pixel-gone",
        status=MessageStatus.SENT,
    )
    gone_path = open_pixel_url(gone.pk).replace("http://testserver", "")
    gone.delete()

    # when / then
    assert Client().get(path[:-3] + "xyz").status_code == 400
    assert Client().get(gone_path).status_code == 400
    assert not MessageEvent.objects.filter(event_id=f"open:{gone.pk}").exists()
    assert Client().get(path).status_code == 200


def test_open_pixel_locks_the_message_without_reading_it_first(
    email_sent, django_assert_max_num_queries
):
    # the token carries the id, so the lock is the first read, and the same statement
    # stores the provider event by ON CONFLICT DO NOTHING, without a savepoint of its own
    path = open_pixel_url(email_sent.pk).replace("http://testserver", "")
    with django_assert_max_num_queries(20) as captured:
        assert Client().get(path).status_code == 200
    sqls = [q["sql"] for q in captured.captured_queries]
    assert sqls[0].startswith("SAVEPOINT")  # the service's transaction, in the test's
    # one prepared statement (prepared on the connection's first open, then executed)
    assert re.match(r"(PREPARE|EXECUTE) churn_message_lock_store\b", sqls[1])
    lock_and_store = _lock_and_store_sql()
    assert "FOR UPDATE" in lock_and_store and "INTO notifications_messageevent" in lock_and_store
    # a repeated open: the transaction and the one statement that finds it stored
    with django_assert_max_num_queries(3):
        assert Client().get(path).status_code == 200
    assert MessageEvent.objects.filter(message=email_sent, kind="opened").count() == 1


def test_click_redirects_only_to_urls_the_message_contained(email_sent):
    good = click_url(email_sent.pk, "https://homes.test/listing/9?a=1&b=2").replace(
        "http://testserver", ""
    )
    response = Client().get(good)
    assert (
        response.status_code == 302
        and response["Location"] == "https://homes.test/listing/9?a=1&b=2"
    )
    email_sent.refresh_from_db()
    assert email_sent.status == MessageStatus.CLICKED
    # a validly signed token for a URL the message did not contain is refused
    evil = click_url(email_sent.pk, "https://evil.test/").replace("http://testserver", "")
    assert Client().get(evil).status_code == 400
    # and a forged token too
    assert Client().get(good[:-3] + "xyz").status_code == 400


def test_unsubscribe_link_asks_then_suppresses_email(tenant, lead, email_sent):
    path = unsubscribe_url(email_sent.pk).replace("http://testserver", "")
    assert Client().get(path).status_code == 200
    assert not Suppression.objects.filter(channel="email").exists()  # a GET only asks
    seen, done = _signals(recipient_opted_out)
    try:
        response = Client(enforce_csrf_checks=True).post(path, {"List-Unsubscribe": "One-Click"})
    finally:
        done()
    assert response.status_code == 200
    entry = Suppression.objects.get(tenant=tenant, channel="email")
    assert entry.address == lead.email.lower() and entry.reason == "unsubscribe"
    assert seen == [
        {"tenant_id": tenant.pk, "lead_id": lead.pk, "channel": "email", "reason": "unsubscribe"}
    ]
    later = message_request(
        tenant=tenant,
        channel="email",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="em-2",
    )
    message_send(message_id=later.pk)
    later.refresh_from_db()
    assert later.status == MessageStatus.SUPPRESSED


def test_anymail_tracking_webhook_marks_delivered_and_hard_bounce_suppresses(
    tenant, lead, email_sent, settings
):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:secret"}
    Message.objects.filter(pk=email_sent.pk).update(provider_message_id="pm-1")
    auth = "Basic " + base64.b64encode(b"hook:secret").decode()
    meta = {"notification_message_id": str(email_sent.pk)}
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "pm-1",
        "Recipient": lead.email,
        "DeliveredAt": "2026-01-01T10:00:00Z",
        "Metadata": meta,
    }
    response = Client().post(
        "/anymail/postmark/tracking/",
        delivery,
        content_type="application/json",
        HTTP_AUTHORIZATION=auth,
    )
    assert response.status_code == 200
    email_sent.refresh_from_db()
    assert email_sent.status == MessageStatus.DELIVERED
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "ID": 42,
        "MessageID": "pm-1",
        "Email": lead.email,
        "BouncedAt": "2026-01-01T10:01:00Z",
        "Metadata": meta,
    }
    Client().post(
        "/anymail/postmark/tracking/",
        bounce,
        content_type="application/json",
        HTTP_AUTHORIZATION=auth,
    )
    assert Suppression.objects.get(tenant=tenant, channel="email").reason == "bounce"
    email_sent.refresh_from_db()
    assert email_sent.status == MessageStatus.DELIVERED  # a bounce cannot undo a delivery
    unauthorized = Client().post(
        "/anymail/postmark/tracking/", delivery, content_type="application/json"
    )
    assert unauthorized.status_code in (400, 401, 403)


def test_in_app_read_callback_marks_opened_and_checks_its_signature(tenant, lead, settings):
    channel_config(tenant, "in_app", "notifications.backends.locmem.LocmemBackend", secret="s3cret")
    template_make(tenant, "in_app")
    message = message_request(
        tenant=tenant,
        channel="in_app",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="ia",
    )
    message_send(message_id=message.pk)
    path = f"/api/notifications/callbacks/in-app/{tenant.slug}/"
    body = json.dumps({"event": "read", "message_id": message.pk, "event_id": "r1"}).encode()
    ts = str(int(time.time()))
    bad = Client().post(
        path,
        body,
        content_type="application/json",
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign("nope", ts, body),
    )
    assert bad.status_code == 401
    stale_ts = str(int(time.time()) - 3600)
    stale = Client().post(
        path,
        body,
        content_type="application/json",
        HTTP_X_TIMESTAMP=stale_ts,
        HTTP_X_SIGNATURE=sign("s3cret", stale_ts, body),
    )
    assert stale.status_code == 401
    good = Client().post(
        path,
        body,
        content_type="application/json",
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign("s3cret", ts, body),
    )
    assert good.status_code == 204
    message.refresh_from_db()
    assert message.status == MessageStatus.OPENED
    wrong = json.dumps({"event": "read", "message_id": 999999, "event_id": "r2"}).encode()
    missing = Client().post(
        path,
        wrong,
        content_type="application/json",
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign("s3cret", ts, wrong),
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_an_undelivered_report_starts_the_fallback_channel(tenant, lead, twilio_fake):
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    template_make(tenant, "email")
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="fb-cb",
        fallback_channels=["email"],
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()
    params = {
        "MessageSid": message.provider_message_id,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
    }
    for _ in range(2):
        _twilio_post(Client(), _status_path(tenant, message), params, twilio_fake.auth_token)
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED and "30003" in message.status_reason
    assert Message.objects.filter(fallback_of=message, channel="email").count() == 1
