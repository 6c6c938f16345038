"""Handlers of signals from below and from libraries: churnapp's CRM message events and
anymail's normalized tracking events."""

from __future__ import annotations

from churnapp.models import Tenant
from notifications.services.callbacks import anymail_tracking_record, ghl_message_event_record


def anymail_tracking_received(sender, event, esp_name, **kwargs) -> None:
    anymail_tracking_record(event=event, esp_name=esp_name)


def crm_message_received(sender, *, tenant_id, payload, **kwargs) -> None:
    """A verified GHL message event: delivery status of our messages, replies, STOP."""
    ghl_message_event_record(tenant=Tenant.objects.get(pk=tenant_id), payload=payload)
