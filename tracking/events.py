"""Append a lifecycle event and broadcast it to the tenant's dashboard group after commit."""

from __future__ import annotations

import datetime as dt
import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from notifications.realtime import tenant_group
from tracking.models import TrackingEvent

logger = logging.getLogger(__name__)

BROADCAST_TYPE = "tracking.event"


def event_payload(event: TrackingEvent) -> dict:
    """The JSON shape of an event on the wire (WebSocket and the resync API)."""
    return {
        "id": event.id,
        "kind": event.kind,
        "lead_id": event.lead_id,
        "intervention_id": event.intervention_id,
        "message_id": event.message_id,
        "escalation_id": event.escalation_id,
        "stage": event.stage,
        "channel": event.channel,
        "data": event.data,
        "occurred_at": event.occurred_at.isoformat(),
    }


def _json_safe(data: dict) -> dict:
    # Signal details may carry datetimes or Decimals; the log and the wire hold JSON.
    return json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))


def tracking_event_record(
    *,
    tenant_id: int,
    kind: str,
    lead_id: int | None = None,
    intervention_id: int | None = None,
    message_id: int | None = None,
    escalation_id: int | None = None,
    stage: int | None = None,
    channel: str = "",
    data: dict | None = None,
    occurred_at: dt.datetime | None = None,
) -> TrackingEvent:
    """Append one event in the caller's transaction and broadcast it once that commits."""
    event = TrackingEvent.objects.create(
        tenant_id=tenant_id,
        kind=kind,
        lead_id=lead_id,
        intervention_id=intervention_id,
        message_id=message_id,
        escalation_id=escalation_id,
        stage=stage,
        channel=channel or "",
        data=_json_safe(data or {}),
        occurred_at=occurred_at or timezone.now(),
    )
    tracking_event_send_on_commit(tenant_id=tenant_id, payload=event_payload(event))
    return event


def tracking_event_send_rollback_unsafe(*, tenant_id: int, payload: dict) -> None:
    """Publish now, whatever becomes of the current transaction. Use the on_commit form:
    this one may announce an event that then rolls back."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            tenant_group(tenant_id), {"type": BROADCAST_TYPE, "event": payload}
        )
    except Exception:
        # The dashboard resyncs from /api/tracking/events; a lost broadcast must never
        # fail the committed work that produced it.
        logger.exception("tracking broadcast of event %s failed", payload.get("id"))


def tracking_event_send_on_commit(*, tenant_id: int, payload: dict) -> None:
    """Publish to the tenant's group after the current transaction commits (never if it
    rolls back)."""
    transaction.on_commit(
        lambda: tracking_event_send_rollback_unsafe(tenant_id=tenant_id, payload=payload)
    )
