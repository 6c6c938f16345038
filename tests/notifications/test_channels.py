"""Each of the seven channels sends its real request shape to a local fake (or SMTP)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import py_vapid
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from notifications.models import DeliveryAttempt, MessageStatus, PushSubscription, Suppression
from notifications.realtime import agent_group
from notifications.services import message_request
from notifications.services.sending import message_send
from tests.fakes.http import Answer, FakeServer, Recorded
from tests.notifications.conftest import channel_config, ghl_config, template_make, twilio_config

pytestmark = pytest.mark.django_db


def _request(tenant, channel, key="k1", **kwargs):
    return message_request(
        tenant=tenant,
        channel=channel,
        template_key="checkin",
        context={},
        idempotency_key=key,
        **kwargs,
    )


def _send(message):
    outcome = message_send(message_id=message.pk)
    message.refresh_from_db()
    return outcome


def test_ghl_sms_posts_a_conversations_message(tenant, lead, ghl_fake):
    # given
    ghl_config(tenant, ghl_fake, "sms", "notifications.backends.ghl.GhlSmsBackend")
    template_make(tenant, "sms")
    message = _request(tenant, "sms", lead=lead)
    # when
    _send(message)
    # then
    [req] = ghl_fake.requests
    assert (req.method, req.path) == ("POST", "/conversations/messages")
    assert req.headers["version"] == "2021-04-15"
    assert req.headers["authorization"] == f"Bearer {ghl_fake.token}"
    assert req.headers["idempotency-key"] == "k1"
    assert req.json() == {
        "type": "SMS",
        "contactId": lead.external_id,
        "message": message.body_text,
    }
    assert message.status == MessageStatus.SENT
    assert message.provider == "ghl" and message.provider_message_id in ghl_fake.sent
    attempt = DeliveryAttempt.objects.get(message=message)
    assert (attempt.number, attempt.outcome, attempt.status_code) == (1, "sent", 201)


def test_ghl_email_posts_subject_and_tracked_html(tenant, lead, ghl_fake):
    ghl_config(tenant, ghl_fake, "email", "notifications.backends.ghl.GhlEmailBackend")
    template_make(
        tenant,
        "email",
        body_html='<p>Hi {{ lead.first_name }}, <a href="https://homes.test/l/1">see this</a></p>',
    )
    message = _request(tenant, "email", lead=lead)
    _send(message)
    [req] = ghl_fake.requests
    body = req.json()
    assert body["type"] == "Email" and body["contactId"] == lead.external_id
    assert body["subject"] == f"Still looking, {lead.first_name}?"
    assert "https://homes.test/l/1" not in body["html"]  # rewritten to our click redirect
    assert "http://testserver/t/c/" in body["html"] and "http://testserver/t/o/" in body["html"]
    assert "http://testserver/t/u/" in body["html"] and "http://testserver/t/u/" in body["message"]
    assert message.status == MessageStatus.SENT


def test_twilio_sms_posts_form_with_basic_auth_and_status_callback(tenant, lead, twilio_fake):
    twilio_config(tenant, twilio_fake)
    template_make(tenant, "sms")
    message = _request(tenant, "sms", lead=lead)
    _send(message)
    [req] = twilio_fake.requests
    assert req.path == f"/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
    form = req.form()
    assert form["To"] == lead.phone and form["From"] == "+15125550000"
    assert form["Body"] == message.body_text
    assert form["StatusCallback"] == (
        f"http://testserver/api/notifications/callbacks/twilio/{tenant.slug}/status/?mid={message.pk}"
    )
    assert message.provider_message_id.startswith("SM") and message.status == MessageStatus.SENT


def test_twilio_missing_from_number_is_a_permanent_configuration_failure(tenant, lead, twilio_fake):
    twilio_config(tenant, twilio_fake, from_number="")
    template_make(tenant, "sms")
    message = _request(tenant, "sms", lead=lead)
    _send(message)
    assert message.status == MessageStatus.FAILED
    assert "From number" in message.status_reason
    assert twilio_fake.requests == []


def test_smtp_email_has_html_text_list_unsubscribe_and_our_message_id(
    tenant, lead, smtp_server, settings
):
    # given a real SMTP server on loopback
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    channel_config(
        tenant,
        "email",
        "notifications.backends.email.DjangoEmailBackend",
        from_email="agents@acme.test",
    )
    template_make(
        tenant,
        "email",
        body_html='<p>Hi {{ lead.first_name }} <a href="https://homes.test/x">x</a></p>',
    )
    message = _request(tenant, "email", lead=lead)
    # when
    _send(message)
    # then
    [mail] = smtp_server.messages
    assert smtp_server.envelopes[0] == ("agents@acme.test", [lead.email])
    assert mail["Subject"] == f"Still looking, {lead.first_name}?"
    assert mail["Message-ID"] == f"<notification-{message.pk}@churn.local>"
    assert mail["List-Unsubscribe"].strip().startswith("<http://testserver/t/u/")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert f"Hi {lead.first_name}" in text and "Unsubscribe: http://testserver/t/u/" in text
    assert "http://testserver/t/c/" in html and "http://testserver/t/o/" in html
    assert message.status == MessageStatus.SENT
    assert message.provider_message_id == f"<notification-{message.pk}@churn.local>"


def test_smtp_refused_recipient_is_a_hard_bounce(tenant, lead, smtp_server, settings):
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    smtp_server.refuse.add(lead.email)
    channel_config(tenant, "email", "notifications.backends.email.DjangoEmailBackend")
    template_make(tenant, "email")
    message = _request(tenant, "email", lead=lead)
    _send(message)
    assert message.status == MessageStatus.BOUNCED and smtp_server.messages == []
    assert Suppression.objects.get(tenant=tenant, channel="email").reason == "bounce"


class PostmarkFake(FakeServer):
    """Postmark's /email endpoint, as anymail's Postmark backend calls it."""

    def validate(self, request: Recorded):
        if request.headers.get("x-postmark-server-token") != "pm-token":
            return Answer(401, body={"ErrorCode": 10, "Message": "bad token"})
        return None

    def default(self, request: Recorded):
        body = request.json()
        return Answer(
            200,
            body={
                "To": body["To"],
                "SubmittedAt": "2026-01-01T00:00:00Z",
                "MessageID": "pm-123",
                "ErrorCode": 0,
                "Message": "OK",
            },
        )


def test_anymail_esp_path_records_the_esp_message_id(tenant, lead, settings):
    fake = PostmarkFake().start()
    try:
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "pm-token", "POSTMARK_API_URL": fake.url + "/"}
        channel_config(
            tenant,
            "email",
            "notifications.backends.email.DjangoEmailBackend",
            email_backend="anymail.backends.postmark.EmailBackend",
            from_email="agents@acme.test",
        )
        template_make(tenant, "email")
        message = _request(tenant, "email", lead=lead)
        _send(message)
    finally:
        fake.stop()
    [req] = fake.requests
    body = req.json()
    assert body["To"] == lead.email and body["Metadata"] == {
        "notification_message_id": str(message.pk)
    }
    assert "List-Unsubscribe" in {h["Name"] for h in body.get("Headers", [])}
    assert message.status == MessageStatus.SENT and message.provider_message_id == "pm-123"


def test_in_app_posts_a_signed_webhook_and_2xx_means_delivered(tenant, lead, inapp_fake):
    channel_config(
        tenant,
        "in_app",
        "notifications.backends.inapp.InAppWebhookBackend",
        url=inapp_fake.webhook_url,
        secret=inapp_fake.secret,
    )
    template_make(tenant, "in_app")
    message = _request(tenant, "in_app", lead=lead)
    _send(message)
    [req] = inapp_fake.requests
    expected = hmac.new(
        inapp_fake.secret.encode(),
        req.headers["x-timestamp"].encode() + b"." + req.body,
        hashlib.sha256,
    ).hexdigest()
    assert req.headers["x-signature"] == expected and req.headers["idempotency-key"] == "k1"
    assert inapp_fake.inbox[0]["message_id"] == message.pk
    assert (
        inapp_fake.inbox[0]["read_callback_url"]
        == f"http://testserver/api/notifications/callbacks/in-app/{tenant.slug}/"
    )
    assert message.status == MessageStatus.DELIVERED and message.provider_message_id == "inbox-1"


def test_in_app_with_a_wrong_secret_is_refused_by_the_app(tenant, lead, inapp_fake):
    channel_config(
        tenant,
        "in_app",
        "notifications.backends.inapp.InAppWebhookBackend",
        url=inapp_fake.webhook_url,
        secret="wrong",
    )
    template_make(tenant, "in_app")
    message = _request(tenant, "in_app", lead=lead)
    _send(message)
    assert message.status == MessageStatus.FAILED and inapp_fake.inbox == []


def test_web_push_is_encrypted_and_vapid_signed(tenant, agent, push_fake):
    # given a VAPID key pair and a browser subscription at the fake push service
    vapid = py_vapid.Vapid01()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    channel_config(
        tenant,
        "push",
        "notifications.backends.push.WebPushBackend",
        vapid_private_key=base64.urlsafe_b64encode(raw).decode().rstrip("="),
        vapid_claims_sub="mailto:ops@acme.test",
    )
    sub = push_fake.subscribe()
    PushSubscription.objects.create(
        tenant=tenant,
        agent=agent,
        endpoint=sub["endpoint"],
        p256dh=sub["keys"]["p256dh"],
        auth=sub["keys"]["auth"],
    )
    template_make(tenant, "push", subject="Hot lead", body_text="Call {{ agent.name }}")
    message = _request(tenant, "push", agent=agent)
    # when
    _send(message)
    # then the fake decrypted our payload with the browser's private key
    assert message.status_reason == "", message.status_reason
    [delivery] = push_fake.received
    assert (
        delivery["payload"]["body"] == f"Call {agent.name}"
        and delivery["payload"]["message_id"] == message.pk
    )
    assert delivery["headers"]["ttl"] == "3600"
    assert message.status == MessageStatus.SENT and "/messages/" in message.provider_message_id


def test_web_push_gone_subscription_is_deactivated(tenant, agent, push_fake):
    vapid = py_vapid.Vapid01()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    channel_config(
        tenant,
        "push",
        "notifications.backends.push.WebPushBackend",
        vapid_private_key=base64.urlsafe_b64encode(raw).decode().rstrip("="),
        vapid_claims_sub="mailto:ops@acme.test",
    )
    sub = push_fake.subscribe()
    row = PushSubscription.objects.create(
        tenant=tenant,
        agent=agent,
        endpoint=sub["endpoint"],
        p256dh=sub["keys"]["p256dh"],
        auth=sub["keys"]["auth"],
    )
    push_fake.program(Answer(410, body="gone"))
    template_make(tenant, "push", subject="Alert", body_text="Call {{ agent.name }}")
    message = _request(tenant, "push", agent=agent)
    _send(message)
    row.refresh_from_db()
    assert message.status == MessageStatus.FAILED and row.is_active is False


def test_ghl_workflow_adds_the_contact_to_the_mapped_workflow(tenant, lead, ghl_fake):
    ghl_config(
        tenant,
        ghl_fake,
        "ghl_workflow",
        "notifications.backends.ghl.GhlWorkflowBackend",
        workflows={"checkin": "wf-nurture-1"},
    )
    message = _request(tenant, "ghl_workflow", lead=lead)
    _send(message)
    [req] = ghl_fake.requests
    assert req.path == f"/contacts/{lead.external_id}/workflow/wf-nurture-1"
    assert req.headers["version"] == "2021-07-28" and "eventStartTime" in req.json()
    assert message.status == MessageStatus.DELIVERED


def test_ghl_task_is_assigned_to_the_agent_with_a_due_date(tenant, lead, agent, ghl_fake):
    ghl_config(
        tenant, ghl_fake, "ghl_task", "notifications.backends.ghl.GhlTaskBackend", due_in_hours=4
    )
    template_make(
        tenant,
        "ghl_task",
        subject="Call {{ lead.first_name }}",
        body_text="Risk: {{ risk_reasons|join:', ' }}",
    )
    message = _request(tenant, "ghl_task", lead=lead, agent=agent)
    message = message_request(
        tenant=tenant,
        channel="ghl_task",
        lead=lead,
        template_key="checkin",
        context={"risk_reasons": ["no reply in 14 days"]},
        idempotency_key="task-2",
    )
    _send(message)
    [req] = ghl_fake.requests
    body = req.json()
    assert (
        req.path == f"/contacts/{lead.external_id}/tasks" and req.headers["version"] == "2021-07-28"
    )
    assert (
        body["title"] == f"Call {lead.first_name}" and body["body"] == "Risk: no reply in 14 days"
    )
    assert (
        body["assignedTo"] == "ghl-user-7"
        and body["completed"] is False
        and body["dueDate"].endswith("Z")
    )
    assert (
        message.status == MessageStatus.DELIVERED and message.provider_message_id in ghl_fake.tasks
    )


def test_agent_alert_reaches_the_agents_group_on_the_channel_layer(tenant, lead, agent, settings):
    channel_config(
        tenant,
        "agent_alert",
        "notifications.backends.agent_alert.ChannelLayerAlertBackend",
        companion="none",
    )
    template_make(
        tenant, "agent_alert", subject="At risk", body_text="{{ lead.first_name }} went quiet"
    )
    message = _request(tenant, "agent_alert", agent=agent, lead=lead)

    async def listen_while_sending() -> dict:
        # One loop for the listening side: a pub/sub layer's channels live in the loop
        # (the process) that made them, as a dashboard socket's do in daphne.
        layer = get_channel_layer()
        channel_name = await layer.new_channel()
        await layer.group_add(agent_group(agent.pk), channel_name)
        try:
            await sync_to_async(_send)(message)
            return await asyncio.wait_for(layer.receive(channel_name), 10)
        finally:
            await layer.group_discard(agent_group(agent.pk), channel_name)

    event = async_to_sync(listen_while_sending)()
    assert event["type"] == "tracking.event" and event["event"] == "agent_alert"
    assert event["message_id"] == message.pk and event["body"] == f"{lead.first_name} went quiet"
    assert message.status == MessageStatus.SENT


def test_ghl_fake_rejects_a_message_without_contact_id(ghl_fake):
    import requests

    response = requests.post(
        ghl_fake.url + "/conversations/messages",
        json={"type": "SMS", "message": "hi"},
        headers={"Authorization": f"Bearer {ghl_fake.token}", "Version": "2021-04-15"},
        timeout=5,
    )
    assert response.status_code == 422 and "contactId" in json.dumps(response.json())
