"""Handlers of signals from below and from libraries: anymail's normalized tracking events."""

from __future__ import annotations

from notifications.services.callbacks import anymail_tracking_record


def anymail_tracking_received(sender, event, esp_name, **kwargs) -> None:
    anymail_tracking_record(event=event, esp_name=esp_name)
