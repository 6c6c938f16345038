"""Celery tasks: one send per message or per batch (queue by channel family), and the
outbox sweeper."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from notifications.models import CHANNEL_QUEUE, Message
from notifications.services.messages import message_enqueue
from notifications.services.sending import message_send as message_send_service
from notifications.services.sending import message_send_batch as message_send_batch_service
from notifications.services.sending import outbox_sweep as outbox_sweep_service

# acks_late is safe: the conditional claim makes a redelivered task a no-op. The queue
# named here is only a default: message_enqueue routes by channel family (CHANNEL_QUEUE).
# A database that dropped the connection may answer next time: retried, and the claim
# keeps a retry that follows a provider call from calling again (the sweeper settles it).
_SEND_TASK_OPTIONS = {
    "queue": "sms",
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="notifications.message_send", **_SEND_TASK_OPTIONS)
def message_send(message_id: int) -> str:
    outcome = message_send_service(message_id=message_id)
    detail = f"{outcome.action}: {outcome.detail}"
    retrying = outcome.action in ("retry", "defer")
    if not (retrying or settings.NOTIFICATIONS_SEND_DRAIN):
        return detail
    row = Message.objects.filter(pk=message_id).values_list("tenant_id", "channel").first()
    if row is None or row[1] not in CHANNEL_QUEUE:
        return detail
    tenant_id, channel = row
    if retrying:
        message_enqueue(message_id=message_id, channel=channel, countdown=outcome.countdown)
        return detail
    # Drain: a fan-out publishes one task per message; the first to run takes the other
    # due messages of its tenant and channel along as a batch, and their own tasks find
    # them claimed or settled (a no-op). Without this every message paid a task, three
    # commits and a dozen queries of its own.
    batch = message_send_batch_service(tenant_id=tenant_id, channel=channel)
    for other_id, countdown in batch.later:
        message_enqueue(message_id=other_id, channel=channel, countdown=countdown)
    return f"{detail}; with {batch.claimed} more"


# A batch of one tenant's messages on one channel (messages_enqueue groups them). The
# same claim as above makes a redelivered batch send only what is still queued.
@shared_task(name="notifications.message_send_batch", **_SEND_TASK_OPTIONS)
def message_send_batch(tenant_id: int, channel: str, message_ids: list[int] | None = None) -> str:
    outcome = message_send_batch_service(
        tenant_id=tenant_id, channel=channel, message_ids=message_ids
    )
    # Retries and rate-limit deferrals go on one by one, by the single-send task.
    for message_id, countdown in outcome.later:
        message_enqueue(message_id=message_id, channel=channel, countdown=countdown)
    return f"claimed {outcome.claimed}, sent {outcome.sent}, later {len(outcome.later)}"


@shared_task(name="notifications.outbox_sweep", queue="default", ignore_result=True)
def outbox_sweep() -> dict:
    result = outbox_sweep_service()
    return result.__dict__
