"""No phone number, email address or message body reaches the logs: a realistic flow
(lead and activity ingest over the API, a GHL webhook, SMS and email sends through the
provider fakes, a provider failure, status and inbound callbacks) is run with the
project's own log handlers writing to a buffer, at DEBUG, and the buffer is searched."""

from __future__ import annotations

import io
import json
import logging
import time
from urllib.parse import urlencode

import pytest
from rest_framework.test import APIClient

from churnapp.models import Lead, WebhookEvent
from churnapp.services.webhooks import webhook_event_process
from config.logging import RedactFilter
from notifications.models import Message
from notifications.services import message_request
from notifications.services.sending import message_send
from tests.fakes.http import Answer
from tests.fakes.inapp import sign
from tests.fakes.smtp import SmtpServer
from tests.fakes.twilio import TwilioFake, twilio_signature
from tests.fixtures_ghl import ghl_event
from tests.notifications.conftest import channel_config, template_make, twilio_config

pytestmark = pytest.mark.django_db

PHONE = "+15125550111"
PHONE_LOCAL = "(512) 555-0111"
EMAIL = "quintessa.pii@example.org"
GHL_PHONE = "+15125550122"
GHL_EMAIL = "ghl.contact.pii@example.net"
BODY_PHRASE = "the three-bed on Maple Street is back"
INBOUND_PHRASE = "please call my cell tomorrow"


@pytest.fixture
def project_log():
    """The handlers LOGGING configured (the ones with the redaction filter), writing to
    one buffer instead of stderr; every logger at DEBUG for the test."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if any(isinstance(f, RedactFilter) for f in h.filters)]
    assert handlers, "LOGGING's console handler (with RedactFilter) is not installed"
    buffer = io.StringIO()
    old_streams = [h.setStream(buffer) for h in handlers]
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.setLevel(old_level)
        for handler, stream in zip(handlers, old_streams, strict=True):
            handler.setStream(stream)


def test_a_whole_flow_logs_no_phone_email_or_body(
    project_log, settings, tenant, api_client, post_ghl
):
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 0.01
    tenant.ghl_location_id = "loc-acme"
    tenant.save()
    twilio = TwilioFake().start()
    smtp = SmtpServer().start()
    try:
        twilio_config(tenant, twilio)
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        channel_config(tenant, "email", "notifications.backends.email.DjangoEmailBackend")
        channel_config(tenant, "in_app", "notifications.backends.locmem.LocmemBackend", secret="s")
        body = "Hi {{ lead.first_name }}, " + BODY_PHRASE + ". Reply YES."
        template_make(tenant, "sms", body_text=body)
        template_make(tenant, "email", body_text=body)
        template_make(tenant, "in_app", body_text=body)

        # ingest: a lead and its activities over the API, a contact over GHL
        r = api_client.put(
            "/api/leads/upsert/",
            {
                "external_id": "pii-1",
                "first_name": "Quintessa",
                "phone": PHONE_LOCAL,
                "email": EMAIL,
            },
            format="json",
        )
        assert r.status_code == 201
        bad = api_client.put(
            "/api/leads/upsert/",
            {"external_id": "pii-2", "email": "broken@@" + EMAIL},
            format="json",
        )
        assert bad.status_code == 400
        r = api_client.post(
            "/api/activities/bulk/",
            {
                "items": [
                    {
                        "lead_external_id": "pii-1",
                        "kind": "sms_inbound",
                        "occurred_at": "2026-11-20T10:00:00Z",
                        "source_event_id": "act-1",
                        "payload": {"from": PHONE, "body": INBOUND_PHRASE, "email": EMAIL},
                    }
                ]
            },
            format="json",
        )
        assert r.status_code in (200, 201), r.content
        r = post_ghl(
            tenant.slug,
            ghl_event(
                "ContactCreate",
                location_id="loc-acme",
                id="ghl-pii",
                email=GHL_EMAIL,
                phone=GHL_PHONE,
                firstName="Ghlname",
            ),
        )
        assert r.status_code == 200
        webhook_event_process(webhook_event_id=WebhookEvent.objects.latest("pk").pk)
        lead = Lead.objects.get(tenant=tenant, external_id="pii-1")

        # send: SMS (Twilio), email (SMTP), in-app; then an SMS the provider refuses
        sent = {}
        for channel in ("sms", "email", "in_app"):
            m = message_request(
                tenant=tenant,
                channel=channel,
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=f"pii-{channel}",
            )
            message_send(message_id=m.pk)
            sent[channel] = Message.objects.get(pk=m.pk)
        assert sent["sms"].status == "sent" and sent["email"].status == "sent"
        twilio.program(
            Answer(
                400,
                body={
                    "code": 21211,
                    "status": 400,
                    "message": f"The 'To' number {PHONE} is not a valid phone number.",
                },
            )
        )
        failing = message_request(
            tenant=tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="pii-sms-2",
        )
        message_send(message_id=failing.pk)

        # callbacks: Twilio status and an inbound SMS, an in-app read
        client = APIClient()
        status_path = (
            f"/api/notifications/callbacks/twilio/{tenant.slug}/status/?mid={sent['sms'].pk}"
        )
        inbound_path = f"/api/notifications/callbacks/twilio/{tenant.slug}/inbound/"
        for path, params in (
            (
                status_path,
                {
                    "MessageSid": sent["sms"].provider_message_id,
                    "MessageStatus": "delivered",
                    "To": PHONE,
                },
            ),
            (
                inbound_path,
                {
                    "From": PHONE,
                    "To": "+15125550000",
                    "Body": INBOUND_PHRASE,
                    "MessageSid": "SMin1",
                },
            ),
            (
                inbound_path,
                {"From": PHONE, "To": "+15125550000", "Body": "STOP", "MessageSid": "SMin2"},
            ),
        ):
            signature = twilio_signature(
                auth_token=twilio.auth_token, url="http://testserver" + path, params=params
            )
            r = client.post(
                path,
                urlencode(params),
                content_type="application/x-www-form-urlencoded",
                HTTP_X_TWILIO_SIGNATURE=signature,
            )
            assert r.status_code in (200, 204), (path, r.content)
        raw = json.dumps(
            {"event": "read", "message_id": sent["in_app"].pk, "event_id": "r"}
        ).encode()
        ts = str(int(time.time()))
        r = client.post(
            f"/api/notifications/callbacks/in-app/{tenant.slug}/",
            raw,
            content_type="application/json",
            HTTP_X_TIMESTAMP=ts,
            HTTP_X_SIGNATURE=sign("s", ts, raw),
        )
        assert r.status_code == 204
    finally:
        twilio.stop()
        smtp.stop()

    # then: the flow did log, and none of it is personal
    # (aiosmtpd's "mail.log" is the fake SMTP server's own logger, inside this process.)
    logged = "\n".join(
        line for line in project_log.getvalue().splitlines() if " mail.log " not in line
    )
    assert "django.request" in logged, "the refused upsert's warning is missing: no capture"
    digits = PHONE[2:]
    for secret in (
        PHONE,
        digits,
        PHONE_LOCAL,
        EMAIL,
        GHL_PHONE,
        GHL_EMAIL,
        BODY_PHRASE,
        INBOUND_PHRASE,
    ):
        assert secret not in logged, f"{secret!r} was logged:\n" + "\n".join(
            line for line in logged.splitlines() if secret in line
        )
