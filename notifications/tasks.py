"""Celery tasks: one send per message (queue by channel family) and the outbox sweeper."""

from __future__ import annotations

from celery import shared_task

from notifications.models import CHANNEL_QUEUE, Message
from notifications.services.messages import message_enqueue
from notifications.services.sending import message_send as message_send_service
from notifications.services.sending import outbox_sweep as outbox_sweep_service


# acks_late is safe: the conditional claim makes a redelivered task a no-op. The queue
# named here is only a default: message_enqueue routes by channel family (CHANNEL_QUEUE).
@shared_task(name="notifications.message_send", queue="sms", acks_late=True, ignore_result=True)
def message_send(message_id: int) -> str:
    outcome = message_send_service(message_id=message_id)
    if outcome.action in ("retry", "defer"):
        channel = Message.objects.filter(pk=message_id).values_list("channel", flat=True).first()
        if channel in CHANNEL_QUEUE:
            message_enqueue(message_id=message_id, channel=channel, countdown=outcome.countdown)
    return f"{outcome.action}: {outcome.detail}"


@shared_task(name="notifications.outbox_sweep", queue="default", ignore_result=True)
def outbox_sweep() -> dict:
    result = outbox_sweep_service()
    return result.__dict__
