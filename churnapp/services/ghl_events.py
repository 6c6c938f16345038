"""What each GHL webhook event means for our data: contacts become leads, messages,
appointments and opportunities become lead activities. Idempotent per event."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from churnapp.exceptions import ApplicationError
from churnapp.models import ActivityKind, Lead, LeadActivity, Tenant
from churnapp.normalize import timestamp_parse
from churnapp.services.activities import ActivityInput, activities_ingest, activity_record
from churnapp.services.leads import DND_CHANNELS, lead_fields_clean, lead_mark_deleted, lead_upsert
from churnapp.signals import crm_message_received

BODY_KEEP = 1000  # characters of a message body kept on the activity


@dataclass(frozen=True)
class EventOutcome:
    applied: bool  # False: nothing in it concerns us (stored as "ignored")
    note: str = ""


def ghl_event_apply(*, tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    """Apply one verified GHL event to the tenant's data. Unknown types are ignored."""
    handler = HANDLERS.get(event_type)
    if handler is None:
        return EventOutcome(False, f"event type {event_type!r} is not used")
    return handler(tenant, event_type, payload)


# --- contacts -> leads --------------------------------------------------------------


def _contact_raw_fields(payload: dict) -> dict[str, Any]:
    """GHL contact keys -> our lead input fields, for the keys the event carries."""
    raw: dict[str, Any] = {}
    if "firstName" in payload or "lastName" in payload:
        if "firstName" in payload:
            raw["first_name"] = payload.get("firstName") or ""
        if "lastName" in payload:
            raw["last_name"] = payload.get("lastName") or ""
    else:
        full = payload.get("name") or payload.get("contactName") or payload.get("fullName")
        if isinstance(full, str) and full.strip():
            first, _, last = full.strip().partition(" ")
            raw["first_name"], raw["last_name"] = first, last.strip()
    for ours, theirs in (("email", "email"), ("phone", "phone"), ("timezone", "timezone")):
        if theirs in payload:
            raw[ours] = payload.get(theirs) or ""
    if "source" in payload:
        source = payload.get("source") or ""
        raw["source"] = source[:64] if isinstance(source, str) else source
    if "dnd" in payload and payload["dnd"] is not None:
        raw["dnd"] = payload["dnd"]
    if isinstance(payload.get("dndSettings"), dict):
        # A channel is blocked while its status is active or permanent (GHL's values).
        raw["dnd_channels"] = [
            channel.lower()
            for channel, setting in payload["dndSettings"].items()
            if isinstance(setting, dict)
            and str(setting.get("status", "")).lower() in ("active", "permanent")
            and channel.lower() in DND_CHANNELS
        ]
    if payload.get("tags") is not None:
        raw["tags"] = payload["tags"]
    if "assignedTo" in payload:
        raw["assigned_agent_ghl_user_id"] = payload.get("assignedTo") or None
    if payload.get("dateAdded"):
        try:
            raw["crm_created_at"] = timestamp_parse(payload["dateAdded"])
        except ValueError:
            raw["crm_created_at"] = payload["dateAdded"]  # reported as invalid below
    return raw


def _custom_fields(payload: dict, current: dict) -> dict | None:
    entries = payload.get("customFields")
    if not isinstance(entries, list):
        return None
    merged = dict(current)
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id"):
            merged[str(entry["id"])] = entry.get("value")
    return merged


def _contact_changed_at(payload: dict) -> dt.datetime | None:
    """When the CRM changed the contact: its `dateUpdated` if the event carries one,
    else the event's own timestamp (the receiver checked it parses)."""
    for key in ("dateUpdated", "timestamp"):
        if payload.get(key):
            try:
                return timestamp_parse(payload[key])
            except ValueError:
                continue
    return None


def _lead_lock(tenant: Tenant, contact_id: str) -> tuple[Lead, bool]:
    """The contact's lead, locked, and whether it is new: a bare one is created first
    (concurrent events for a new contact then queue on its row instead of racing)."""
    lead = Lead.objects.select_for_update().filter(tenant=tenant, external_id=contact_id).first()
    if lead is not None:
        return lead, False
    _, created = lead_upsert(tenant=tenant, external_id=contact_id)
    return Lead.objects.select_for_update().get(tenant=tenant, external_id=contact_id), created


@transaction.atomic
def _contact_upsert(tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    contact_id = payload.get("id") or payload.get("contactId")
    if not contact_id or not isinstance(contact_id, str):
        raise ApplicationError(f"{event_type} carries no contact id.")
    changed_at = _contact_changed_at(payload)
    lead, created = _lead_lock(tenant, contact_id)
    if changed_at is not None and lead.crm_updated_at is not None:
        if changed_at < lead.crm_updated_at:
            return EventOutcome(
                False,
                f"{event_type} of {changed_at.isoformat()} is older than the contact's "
                f"state of {lead.crm_updated_at.isoformat()}: not applied",
            )
    raw = _contact_raw_fields(payload)
    merged = _custom_fields(payload, lead.custom_fields or {})
    if merged is not None:
        raw["custom_fields"] = merged
    _, errors = lead_fields_clean(tenant=tenant, fields=raw)
    notes = []
    # One bad field from the CRM (say an unparseable phone) must not lose the rest.
    update = {name: value for name, value in raw.items() if name not in errors}
    if "assigned_agent_ghl_user_id" in errors:
        # An assignee we do not know (yet): the lead is unassigned here, not dropped.
        update["assigned_agent_id"] = None
        notes.append(f"assignedTo {raw['assigned_agent_ghl_user_id']!r} is no known agent")
        del errors["assigned_agent_ghl_user_id"]
    notes += [f"{name} skipped: {problem}" for name, problem in errors.items()]
    lead, _ = lead_upsert(tenant=tenant, external_id=contact_id, **update)
    if changed_at is not None:
        Lead.objects.filter(pk=lead.pk).update(crm_updated_at=changed_at)
    action = "created" if created else "updated"
    return EventOutcome(True, "; ".join([f"lead {lead.pk} {action}", *notes]))


def _contact_delete(tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    contact_id = payload.get("id") or payload.get("contactId")
    if not contact_id:
        raise ApplicationError("ContactDelete carries no contact id.")
    lead = lead_mark_deleted(
        tenant=tenant, external_id=contact_id, deleted_at=timestamp_parse(payload["timestamp"])
    )
    if lead is None:
        return EventOutcome(False, f"contact {contact_id!r} was never known here")
    return EventOutcome(True, f"lead {lead.pk} marked deleted")


# --- messages, appointments, opportunities -> activities ---------------------------

_MESSAGE_KINDS = {
    ("sms", "inbound"): ActivityKind.SMS_INBOUND,
    ("sms", "outbound"): ActivityKind.SMS_OUTBOUND,
    ("email", "inbound"): ActivityKind.EMAIL_REPLY,
    ("email", "outbound"): ActivityKind.EMAIL_OUTBOUND,
    ("call", "inbound"): ActivityKind.CALL_INBOUND,
    ("call", "outbound"): ActivityKind.CALL_OUTBOUND,
}
# Chat channels count as text conversations (a WhatsApp reply is a reply) but keep
# their own channel name on the activity.
_CHAT_TYPES = {
    "whatsapp": "whatsapp",
    "fb": "facebook",
    "facebook": "facebook",
    "ig": "instagram",
    "instagram": "instagram",
    "gmb": "gmb",
    "livechat": "live_chat",
    "webchat": "live_chat",
}


def _message_family(message_type: Any) -> tuple[str, str] | None:
    """(kind family, channel) for GHL's messageType (SMS, TYPE_SMS, Email, CALL, ...)."""
    key = re.sub(r"[^a-z]", "", str(message_type or "").lower())
    key = key.removeprefix("type")  # the API says TYPE_SMS where webhooks say SMS
    if key in ("sms", "mms"):
        return "sms", "sms"
    if key == "email":
        return "email", "email"
    if key in ("call", "voicemail", "ivrcall"):
        return "call", "call"
    if key in _CHAT_TYPES:
        return "sms", _CHAT_TYPES[key]
    return None


def _message_direction(event_type: str, payload: dict) -> tuple[str, str]:
    """(direction, note). GHL's published examples disagree on whether the event type
    or the `direction` field tells which way a message went; the field describes the
    message itself, so it wins when present, and a disagreement is noted."""
    implied = "inbound" if event_type == "InboundMessage" else "outbound"
    stated = str(payload.get("direction") or "").lower()
    if stated in ("inbound", "outbound"):
        note = "" if stated == implied else f"direction {stated!r} disagrees with {event_type}"
        return stated, note
    return implied, ""


def _lead_for_contact(tenant: Tenant, contact_id: str) -> Lead:
    """The lead for a GHL contact; an unknown contact becomes a bare lead, not a loss."""
    lead = Lead.objects.filter(tenant=tenant, external_id=contact_id).first()
    if lead is None:
        lead, _ = lead_upsert(tenant=tenant, external_id=contact_id)
    return lead


def _occurred_at(payload: dict, *keys: str) -> dt.datetime:
    for key in keys:
        if payload.get(key):
            try:
                return timestamp_parse(payload[key])
            except ValueError:
                continue
    return timestamp_parse(payload["timestamp"])


def _message(tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    contact_id, message_id = payload.get("contactId"), payload.get("messageId")
    if not contact_id or not message_id:
        raise ApplicationError(f"{event_type} needs contactId and messageId.")
    family = _message_family(payload.get("messageType"))
    if family is None:
        return EventOutcome(False, f"messageType {payload.get('messageType')!r} is not tracked")
    direction, note = _message_direction(event_type, payload)
    kind = _MESSAGE_KINDS[(family[0], direction)]
    lead = _lead_for_contact(tenant, contact_id)
    details = {
        key: payload[key]
        for key in (
            "messageType",
            "direction",
            "conversationId",
            "status",
            "subject",
            "callDuration",
            "callStatus",
        )
        if payload.get(key) not in (None, "")
    }
    if isinstance(payload.get("body"), str):
        details["body"] = payload["body"][:BODY_KEEP]
    occurred_at = _occurred_at(payload, "dateAdded")
    result = activities_ingest(
        tenant=tenant,
        items=[
            ActivityInput(
                lead_external_id=lead.external_id,
                kind=kind,
                occurred_at=occurred_at,
                source_event_id=str(message_id),
                channel=family[1],
                payload=details,
            )
        ],
    )
    crm_message_received.send(
        sender=LeadActivity,
        tenant_id=tenant.id,
        event_type=event_type,
        payload=payload,
        lead_id=lead.id,
    )
    status = "recorded" if result.created else "already recorded"
    return EventOutcome(True, "; ".join(filter(None, [f"{kind} {status}", note])))


def _appointment(tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    appointment = payload.get("appointment")
    if not isinstance(appointment, dict):
        appointment = payload
    contact_id, appointment_id = appointment.get("contactId"), appointment.get("id")
    if not contact_id or not appointment_id:
        raise ApplicationError(f"{event_type} needs appointment.contactId and appointment.id.")
    status = str(appointment.get("appointmentStatus") or "").lower()
    if event_type == "AppointmentDelete" or status in ("cancelled", "canceled"):
        kind = ActivityKind.APPOINTMENT_CANCELLED
    elif status in ("showed", "show", "completed"):
        kind = ActivityKind.SHOWING_ATTENDED
    elif status in ("", "new", "booked", "confirmed"):
        kind = ActivityKind.APPOINTMENT_BOOKED
    else:  # noshow, invalid: no activity kind of ours
        return EventOutcome(False, f"appointmentStatus {status!r} is not tracked")
    lead = _lead_for_contact(tenant, contact_id)
    occurred_at = timestamp_parse(payload["timestamp"])
    if kind == ActivityKind.SHOWING_ATTENDED:
        start = _occurred_at(appointment, "startTime")
        occurred_at = min(start, occurred_at)
    created = activity_record(
        tenant_id=tenant.id,
        lead_id=lead.pk,
        kind=kind,
        occurred_at=occurred_at,
        # One booking, one cancellation, one showing per appointment, however often
        # GHL repeats an update.
        source_event_id=f"ghl:appointment:{appointment_id}:{kind}",
        payload={
            key: appointment[key]
            for key in (
                "id",
                "calendarId",
                "appointmentStatus",
                "startTime",
                "endTime",
                "assignedUserId",
            )
            if appointment.get(key) not in (None, "")
        },
    )
    return EventOutcome(True, f"{kind} {'recorded' if created else 'already recorded'}")


def _opportunity(tenant: Tenant, event_type: str, payload: dict) -> EventOutcome:
    opportunity = payload.get("opportunity")
    if not isinstance(opportunity, dict):
        opportunity = payload
    status = str(opportunity.get("status") or "").lower()
    kinds = {"won": ActivityKind.OPPORTUNITY_WON, "lost": ActivityKind.OPPORTUNITY_LOST}
    if status not in kinds:
        return EventOutcome(False, f"opportunity status {status!r} is not tracked")
    contact_id, opportunity_id = opportunity.get("contactId"), opportunity.get("id")
    if not contact_id or not opportunity_id:
        raise ApplicationError(f"{event_type} needs contactId and id.")
    value = opportunity.get("monetaryValue")
    lead = _lead_for_contact(tenant, contact_id)
    created = activity_record(
        tenant_id=tenant.id,
        lead_id=lead.pk,
        kind=kinds[status],
        occurred_at=timestamp_parse(payload["timestamp"]),
        source_event_id=f"ghl:opportunity:{opportunity_id}:{status}",
        value=float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else None,
        payload={
            key: opportunity[key]
            for key in ("id", "pipelineId", "pipelineStageId", "status", "monetaryValue", "name")
            if opportunity.get(key) not in (None, "")
        },
    )
    return EventOutcome(True, f"{kinds[status]} {'recorded' if created else 'already recorded'}")


HANDLERS: dict[str, Callable[[Tenant, str, dict], EventOutcome]] = {
    "ContactCreate": _contact_upsert,
    "ContactUpdate": _contact_upsert,
    "ContactTagUpdate": _contact_upsert,
    "ContactDndUpdate": _contact_upsert,
    "ContactDelete": _contact_delete,
    "InboundMessage": _message,
    "OutboundMessage": _message,
    "AppointmentCreate": _appointment,
    "AppointmentUpdate": _appointment,
    "AppointmentDelete": _appointment,
    "OpportunityStatusUpdate": _opportunity,
}
