"""What each stored GHL event does to leads and activities; processing twice is harmless."""

import base64
import datetime as dt
import json

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import (
    ActivityKind,
    Lead,
    LeadActivity,
    LeadStatus,
    WebhookEvent,
    WebhookStatus,
)
from churnapp.services.webhooks import webhook_event_process, webhook_events_sweep
from tests.churnapp.conftest import ghl_event


def _process(tenant, payload) -> WebhookEvent:
    event = WebhookEvent.objects.create(
        tenant=tenant,
        webhook_id=payload["webhookId"],
        event_type=payload["type"],
        payload=payload,
        signature_scheme="ed25519",
    )
    return webhook_event_process(webhook_event_id=event.pk)


def _contact(**fields):
    return {
        "id": "c-1",
        "firstName": "Ann",
        "lastName": "Lee",
        "email": "ann@example.com",
        "phone": "(512) 555-0199",
        "dnd": False,
        "dndSettings": {
            "SMS": {"status": "active", "message": "", "code": ""},
            "Email": {"status": "inactive"},
            "Call": {"status": "permanent"},
        },
        "tags": ["buyer", "hot"],
        "source": "zillow",
        "timezone": "America/Chicago",
        "customFields": [{"id": "budget_max", "value": 450000}],
        "dateAdded": "2025-03-01T12:00:00.000Z",
        **fields,
    }


def test_contact_create_makes_a_lead(tenant):
    agent = AgentFactory(tenant=tenant, ghl_user_id="u-7")
    event = _process(tenant, ghl_event("ContactCreate", **_contact(assignedTo="u-7")))
    assert event.status == WebhookStatus.PROCESSED, event.error
    lead = Lead.objects.get(tenant=tenant, external_id="c-1")
    assert (lead.first_name, lead.last_name, lead.email) == ("Ann", "Lee", "ann@example.com")
    assert lead.phone == "+15125550199"
    assert sorted(lead.dnd_channels) == ["call", "sms"]
    assert lead.tags == ["buyer", "hot"]
    assert lead.custom_fields == {"budget_max": 450000}
    assert lead.assigned_agent == agent
    assert lead.timezone == "America/Chicago"
    assert lead.crm_created_at == dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)


def test_contact_update_changes_only_what_it_carries(tenant):
    _process(tenant, ghl_event("ContactCreate", **_contact()))
    event = _process(
        tenant,
        ghl_event(
            "ContactUpdate",
            id="c-1",
            email="new@example.com",
            customFields=[{"id": "x", "value": 1}],
        ),
    )
    assert event.status == WebhookStatus.PROCESSED
    lead = Lead.objects.get(external_id="c-1")
    assert lead.email == "new@example.com" and lead.first_name == "Ann"
    assert lead.custom_fields == {"budget_max": 450000, "x": 1}


@pytest.mark.parametrize("path", ["/api/leads/upsert/", "/api/leads/bulk/"])
def test_an_api_write_is_newer_than_a_late_webhook_about_an_earlier_change(
    tenant, api_client, path
):
    # given a contact the CRM changed a minute ago, whose webhook is still on its way
    before = timezone.now() - dt.timedelta(minutes=1)
    _process(tenant, ghl_event("ContactCreate", **_contact(dateUpdated=_iso(before))))
    # when the integrator writes the contact's current state through the API
    item = {"external_id": "c-1", "email": "api@example.com"}
    body = {"items": [item]} if path.endswith("bulk/") else item
    response = api_client.post(path, body, format="json")
    assert response.status_code in (200, 201), response.content
    # and the late webhook about the earlier change arrives
    late = ghl_event("ContactUpdate", id="c-1", email="late@example.com", dateUpdated=_iso(before))
    event = _process(tenant, late)
    # then it is not applied over the API's newer write
    assert event.status == WebhookStatus.IGNORED and "older than" in event.error
    lead = Lead.objects.get(external_id="c-1")
    assert lead.email == "api@example.com" and lead.crm_updated_at > before
    # and a change made after the API write still applies
    newer = ghl_event(
        "ContactUpdate",
        id="c-1",
        email="newer@example.com",
        dateUpdated=_iso(timezone.now() + dt.timedelta(seconds=1)),
    )
    assert _process(tenant, newer).status == WebhookStatus.PROCESSED
    assert Lead.objects.get(external_id="c-1").email == "newer@example.com"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_bad_phone_and_unknown_assignee_do_not_lose_the_rest(tenant):
    event = _process(
        tenant, ghl_event("ContactCreate", **_contact(phone="12", assignedTo="u-unknown"))
    )
    assert event.status == WebhookStatus.PROCESSED
    assert "phone skipped" in event.error and "u-unknown" in event.error
    lead = Lead.objects.get(external_id="c-1")
    assert lead.phone == "" and lead.email == "ann@example.com" and lead.assigned_agent is None


def test_tag_and_dnd_updates(tenant):
    LeadFactory(tenant=tenant, external_id="c-1", tags=["old"])
    _process(tenant, ghl_event("ContactTagUpdate", id="c-1", tags=["new", "vip"]))
    _process(
        tenant,
        ghl_event(
            "ContactDndUpdate",
            id="c-1",
            dnd=True,
            dndSettings={"Email": {"status": "active"}, "SMS": {"status": "inactive"}},
        ),
    )
    lead = Lead.objects.get(external_id="c-1")
    assert lead.tags == ["new", "vip"]
    assert lead.dnd is True and lead.dnd_channels == ["email"]


def test_contact_delete_marks_the_lead(tenant):
    LeadFactory(tenant=tenant, external_id="c-1")
    event = _process(tenant, ghl_event("ContactDelete", id="c-1"))
    assert event.status == WebhookStatus.PROCESSED
    assert Lead.objects.get(external_id="c-1").deleted_at is not None
    unknown = _process(tenant, ghl_event("ContactDelete", id="c-404"))
    assert unknown.status == WebhookStatus.IGNORED


@pytest.mark.parametrize(
    "event_type, message_type, direction, kind, channel",
    [
        ("InboundMessage", "SMS", "inbound", ActivityKind.SMS_INBOUND, "sms"),
        ("OutboundMessage", "SMS", "outbound", ActivityKind.SMS_OUTBOUND, "sms"),
        ("InboundMessage", "Email", "inbound", ActivityKind.EMAIL_REPLY, "email"),
        ("OutboundMessage", "TYPE_EMAIL", "outbound", ActivityKind.EMAIL_OUTBOUND, "email"),
        ("InboundMessage", "CALL", "inbound", ActivityKind.CALL_INBOUND, "call"),
        ("OutboundMessage", "CALL", "outbound", ActivityKind.CALL_OUTBOUND, "call"),
        ("InboundMessage", "VoiceMail", None, ActivityKind.CALL_INBOUND, "call"),
        ("InboundMessage", "WhatsApp", "inbound", ActivityKind.SMS_INBOUND, "whatsapp"),
        # the direction field wins over the event type when they disagree
        ("InboundMessage", "CALL", "outbound", ActivityKind.CALL_OUTBOUND, "call"),
        ("OutboundMessage", "SMS", "inbound", ActivityKind.SMS_INBOUND, "sms"),
    ],
)
def test_messages_become_activities(tenant, event_type, message_type, direction, kind, channel):
    lead = LeadFactory(tenant=tenant, external_id="c-1")
    sent = timezone.now() - dt.timedelta(minutes=3)
    fields = dict(
        contactId="c-1",
        messageId="m-1",
        messageType=message_type,
        body="Still looking?",
        dateAdded=sent.isoformat(),
    )
    if direction:
        fields["direction"] = direction
    event = _process(tenant, ghl_event(event_type, **fields))
    assert event.status == WebhookStatus.PROCESSED, event.error
    activity = LeadActivity.objects.get(lead=lead)
    assert (activity.kind, activity.channel, activity.source_event_id) == (kind, channel, "m-1")
    assert activity.occurred_at == sent
    assert activity.payload["body"] == "Still looking?"


def test_message_for_unknown_contact_creates_the_lead(tenant):
    event = _process(
        tenant,
        ghl_event(
            "InboundMessage",
            contactId="c-new",
            messageId="m-9",
            messageType="SMS",
            direction="inbound",
        ),
    )
    assert event.status == WebhookStatus.PROCESSED
    lead = Lead.objects.get(tenant=tenant, external_id="c-new")
    assert lead.activities.get().kind == ActivityKind.SMS_INBOUND
    assert lead.last_inbound_at is not None


def test_same_message_in_two_deliveries_is_one_activity(tenant):
    fields = dict(contactId="c-1", messageId="m-1", messageType="SMS", direction="inbound")
    first = _process(tenant, ghl_event("InboundMessage", **fields))
    second = _process(tenant, ghl_event("InboundMessage", **fields))
    assert first.status == second.status == WebhookStatus.PROCESSED
    assert "already recorded" in second.error
    assert LeadActivity.objects.count() == 1


def test_processing_an_event_twice_is_harmless(tenant):
    event = _process(tenant, ghl_event("ContactCreate", **_contact()))
    again = webhook_event_process(webhook_event_id=event.pk)
    assert again.status == WebhookStatus.PROCESSED and again.processed_at == event.processed_at
    assert Lead.objects.count() == 1


def test_untracked_message_type_is_ignored(tenant):
    event = _process(
        tenant,
        ghl_event("InboundMessage", contactId="c", messageId="m", messageType="Carrier Pigeon"),
    )
    assert event.status == WebhookStatus.IGNORED
    assert LeadActivity.objects.count() == 0


def _appointment(status, appointment_id="a-1", **extra):
    return {
        "appointment": {
            "id": appointment_id,
            "calendarId": "cal-1",
            "contactId": "c-1",
            "appointmentStatus": status,
            "startTime": (timezone.now() - dt.timedelta(hours=1)).isoformat(),
            **extra,
        }
    }


def test_appointments(tenant):
    lead = LeadFactory(tenant=tenant, external_id="c-1")
    _process(tenant, ghl_event("AppointmentCreate", **_appointment("confirmed")))
    _process(tenant, ghl_event("AppointmentUpdate", **_appointment("confirmed")))  # repeat
    _process(tenant, ghl_event("AppointmentUpdate", **_appointment("showed")))
    _process(tenant, ghl_event("AppointmentCreate", **_appointment("new", "a-2")))
    _process(tenant, ghl_event("AppointmentUpdate", **_appointment("cancelled", "a-2")))
    noshow = _process(tenant, ghl_event("AppointmentUpdate", **_appointment("noshow", "a-3")))
    kinds = sorted(lead.activities.values_list("kind", flat=True))
    assert kinds == sorted(
        [
            ActivityKind.APPOINTMENT_BOOKED,
            ActivityKind.SHOWING_ATTENDED,
            ActivityKind.APPOINTMENT_BOOKED,
            ActivityKind.APPOINTMENT_CANCELLED,
        ]
    )
    assert noshow.status == WebhookStatus.IGNORED


def test_opportunity_won_and_lost(tenant):
    won_lead = LeadFactory(tenant=tenant, external_id="c-1")
    lost_lead = LeadFactory(tenant=tenant, external_id="c-2")
    _process(
        tenant,
        ghl_event(
            "OpportunityStatusUpdate", id="o-1", contactId="c-1", status="won", monetaryValue=9000
        ),
    )
    _process(tenant, ghl_event("OpportunityStatusUpdate", id="o-2", contactId="c-2", status="lost"))
    open_ = _process(
        tenant, ghl_event("OpportunityStatusUpdate", id="o-3", contactId="c-2", status="open")
    )
    won_lead.refresh_from_db()
    lost_lead.refresh_from_db()
    assert won_lead.status == LeadStatus.CONVERTED
    assert won_lead.activities.get().value == 9000
    assert lost_lead.status == LeadStatus.LOST
    assert open_.status == WebhookStatus.IGNORED


def test_unknown_event_type_is_ignored_not_failed(tenant):
    event = _process(tenant, ghl_event("InvoicePaid", id="inv-1"))
    assert event.status == WebhookStatus.IGNORED
    assert "not used" in event.error


def test_event_missing_its_ids_fails_with_the_reason(tenant):
    event = _process(tenant, ghl_event("InboundMessage", messageType="SMS"))
    assert event.status == WebhookStatus.FAILED
    assert "contactId" in event.error
    assert Lead.objects.count() == 0


def test_message_from_the_far_future_fails_and_stores_nothing(tenant):
    future = (timezone.now() + dt.timedelta(days=2)).isoformat()
    event = _process(
        tenant,
        ghl_event(
            "InboundMessage", contactId="c-1", messageId="m", messageType="SMS", dateAdded=future
        ),
    )
    assert event.status == WebhookStatus.FAILED
    # the bare lead made for the message is rolled back with it
    assert Lead.objects.count() == 0 and LeadActivity.objects.count() == 0


def test_events_of_one_tenant_never_touch_another(tenant, other_tenant):
    theirs = LeadFactory(tenant=other_tenant, external_id="c-1", first_name="Theirs")
    _process(tenant, ghl_event("ContactUpdate", id="c-1", firstName="Mine"))
    theirs.refresh_from_db()
    assert theirs.first_name == "Theirs"
    assert Lead.objects.get(tenant=tenant, external_id="c-1").first_name == "Mine"


@pytest.fixture
def webhooks_queue():
    """The real Redis list behind the "webhooks" Celery queue, emptied before and after."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("webhooks")
    yield client
    client.delete("webhooks")


def test_sweep_reenqueues_only_events_stuck_in_received(tenant, webhooks_queue):
    # given one stuck event, one fresh, one already processed
    def stored(webhook_id, status=WebhookStatus.RECEIVED, minutes_old=10):
        event = WebhookEvent.objects.create(
            tenant=tenant,
            webhook_id=webhook_id,
            event_type="ContactCreate",
            payload={},
            signature_scheme="ed25519",
            status=status,
        )
        WebhookEvent.objects.filter(pk=event.pk).update(
            received_at=timezone.now() - dt.timedelta(minutes=minutes_old)
        )
        return event

    stuck = stored("stuck")
    stored("fresh", minutes_old=0)
    stored("done", status=WebhookStatus.PROCESSED)
    # when
    count = webhook_events_sweep()
    # then one task message is waiting on the webhooks queue, for the stuck event
    assert count == 1
    assert webhooks_queue.llen("webhooks") == 1
    message = json.loads(webhooks_queue.lindex("webhooks", 0))
    assert message["headers"]["task"] == "churnapp.webhook_process"
    assert json.loads(base64.b64decode(message["body"]))[0] == [stuck.pk]
