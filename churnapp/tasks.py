"""churnapp's Celery tasks: thin, ids only, one service call each."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from churnapp.services.webhooks import webhook_event_process, webhook_events_sweep


@shared_task(
    name="churnapp.webhook_process",
    queue="webhooks",
    autoretry_for=(OperationalError,),  # the database blinked; the event is still stored
    retry_backoff=5,
    retry_jitter=True,
    max_retries=5,
)
def webhook_process(webhook_event_id: int) -> str | None:
    event = webhook_event_process(webhook_event_id=webhook_event_id)
    return event.status if event is not None else None


@shared_task(name="churnapp.webhook_sweep", queue="default")
def webhook_sweep() -> int:
    """Re-enqueue stored webhook events whose enqueue was lost."""
    return webhook_events_sweep()
