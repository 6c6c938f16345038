"""The send pipeline: claim, check suppression and rate limit, call the provider outside any
transaction, record the attempt, then retry, fall back, or settle; and the outbox sweeper."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from notifications.backends import backend_for
from notifications.backends.base import (
    BackendError,
    PermanentError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)
from notifications.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Message,
    MessageStatus,
    SuppressionReason,
)
from notifications.ratelimit import ratelimit_acquire
from notifications.recipients import recipient_address
from notifications.services.messages import (
    backoff_ceiling,
    message_enqueue,
    message_fallback_create,
    message_status_set,
)
from notifications.services.suppression import suppression_add, suppression_reason_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """What the task should do next: nothing ("done") or run again after `countdown`."""

    action: str  # "done" | "retry" | "defer"
    countdown: float | None = None
    detail: str = ""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def message_claim_for_send(*, message_id: int, token: uuid.UUID, worker: str) -> bool:
    """Take the row for this worker: queued -> sending, in one conditional UPDATE.

    Another worker holding (or having finished) the message makes this a no-op."""
    table = Message._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table}
               SET status = %s, claim_token = %s, claimed_by = %s, claimed_at = %s, updated_at = %s
             WHERE id = %s AND status = %s
               AND (not_before IS NULL OR not_before <= %s)
               AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
            RETURNING id
            """,
            [
                MessageStatus.SENDING,
                token,
                worker[:200],
                now,
                now,
                message_id,
                MessageStatus.QUEUED,
                now,
                now,
            ],
        )
        return cursor.fetchone() is not None


def _release_claim(*, message_id: int, token: uuid.UUID, wait: float) -> None:
    """Give the row back untouched (no provider call was made): rate limited."""
    Message.objects.filter(pk=message_id, claim_token=token, status=MessageStatus.SENDING).update(
        status=MessageStatus.QUEUED,
        claim_token=None,
        next_attempt_at=timezone.now() + dt.timedelta(seconds=wait),
        updated_at=timezone.now(),
    )


def backoff_seconds(*, attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter, at least the provider's Retry-After."""
    base = float(settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS)
    delay = min(float(settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS), base * 2 ** max(0, attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def message_send(*, message_id: int, worker: str | None = None) -> SendOutcome:
    """Send one message once. Safe to call any number of times for the same id."""
    worker = worker or worker_name()
    message = (
        Message.objects.filter(pk=message_id)
        .only("status", "not_before", "next_attempt_at")
        .first()
    )
    if message is None or message.status != MessageStatus.QUEUED:
        return SendOutcome("done", detail=f"status is {getattr(message, 'status', 'gone')}")
    now = timezone.now()
    due = max(filter(None, [message.not_before, message.next_attempt_at]), default=None)
    if due is not None and due > now:
        return SendOutcome("defer", countdown=(due - now).total_seconds(), detail="not due yet")

    token = uuid.uuid4()
    if not message_claim_for_send(message_id=message_id, token=token, worker=worker):
        return SendOutcome("done", detail="claimed elsewhere")
    message = Message.objects.select_related("tenant", "lead", "agent", "lead__assigned_agent").get(
        pk=message_id
    )

    reason = suppression_reason_for(message=message)
    if reason:
        _settle_without_call(
            message_id=message_id, token=token, status=MessageStatus.SUPPRESSED, reason=reason
        )
        return SendOutcome("done", detail=reason)

    try:
        backend = backend_for(tenant=message.tenant, channel=message.channel)
        bucket = backend.rate_limit_key(message)
    except PermanentError as exc:
        _settle_without_call(
            message_id=message_id, token=token, status=MessageStatus.FAILED, reason=str(exc)
        )
        return SendOutcome("done", detail=str(exc))
    if bucket:
        wait = ratelimit_acquire(provider=backend.provider, key=bucket)
        if wait is not None:
            _release_claim(message_id=message_id, token=token, wait=wait)
            return SendOutcome("defer", countdown=wait, detail=f"rate limited on {bucket}")

    # The attempt counts from here: a provider call is about to be made.
    message.attempts += 1
    message.to_address = (
        recipient_address(channel=message.channel, lead=message.lead, agent=message.agent)
        or message.to_address
    )
    Message.objects.filter(pk=message_id, claim_token=token).update(
        attempts=message.attempts, to_address=message.to_address, provider=backend.provider
    )
    message.provider = backend.provider
    started_at = timezone.now()
    clock = time.monotonic()
    result: SendResult | None = None
    error: BackendError | None = None
    try:
        result = backend.send(message)
    except BackendError as exc:
        error = exc
    latency_ms = int((time.monotonic() - clock) * 1000)
    return _settle_after_call(
        message_id=message_id,
        token=token,
        backend_path=backend.dotted_path,
        worker=worker,
        started_at=started_at,
        latency_ms=latency_ms,
        result=result,
        error=error,
    )


@transaction.atomic
def _settle_without_call(*, message_id: int, token: uuid.UUID, status: str, reason: str) -> None:
    message = Message.objects.select_for_update().get(pk=message_id)
    if message.claim_token != token:
        return
    message_status_set(
        message=message, new_status=status, reason=reason, fields={"claim_token": None}
    )
    message_fallback_create(message=message, why=reason)


@transaction.atomic
def _settle_after_call(
    *,
    message_id: int,
    token: uuid.UUID,
    backend_path: str,
    worker: str,
    started_at: dt.datetime,
    latency_ms: int,
    result: SendResult | None,
    error: BackendError | None,
) -> SendOutcome:
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("tenant", "lead", "agent")
        .get(pk=message_id)
    )
    if isinstance(error, UnknownOutcomeError):
        outcome = AttemptOutcome.UNKNOWN
    elif isinstance(error, TransientError):
        outcome = AttemptOutcome.TRANSIENT
    elif isinstance(error, PermanentError):
        outcome = AttemptOutcome.SUPPRESSED if error.suppress_reason else AttemptOutcome.PERMANENT
    else:
        outcome = AttemptOutcome.SENT
    DeliveryAttempt.objects.create(
        tenant_id=message.tenant_id,
        message=message,
        number=message.attempts,
        backend=backend_path,
        started_at=started_at,
        latency_ms=latency_ms,
        status_code=(result.status_code if result else getattr(error, "status_code", None)),
        outcome=outcome,
        error=str(error or "")[:2000],
        provider_message_id=result.provider_message_id if result else "",
        worker=worker[:200],
    )
    if message.claim_token != token:
        # Settled by someone else meanwhile (a provider callback); the attempt is on record.
        if result and not message.provider_message_id:
            message.provider_message_id = result.provider_message_id
            message.save(update_fields=["provider_message_id", "updated_at"])
        return SendOutcome("done", detail="settled elsewhere")

    if result is not None:
        fields = {
            "claim_token": None,
            # Earlier attempts' errors stay on their DeliveryAttempt rows.
            "status_reason": "",
            "provider_message_id": result.provider_message_id or message.provider_message_id,
            "cost": result.cost,
            "cost_currency": result.cost_currency,
            "next_attempt_at": None,
        }
        if message.status in (MessageStatus.SENDING, MessageStatus.UNKNOWN, MessageStatus.DEAD):
            message_status_set(message=message, new_status=result.status, reason="", fields=fields)
        else:
            # A callback (e.g. Twilio's) already moved it further: keep that status.
            for name, value in fields.items():
                setattr(message, name, value)
            message.save(update_fields=[*fields, "updated_at"])
        return SendOutcome("done", detail=result.status)

    reason = f"attempt {message.attempts}: {error}"
    if isinstance(error, UnknownOutcomeError):
        # It may have gone out: never send again blindly. Callbacks or the sweeper settle it.
        message_status_set(message=message, new_status=MessageStatus.UNKNOWN, reason=reason)
        return SendOutcome("done", detail="unknown")
    if isinstance(error, TransientError):
        if message.attempts < message.max_attempts:
            delay = backoff_seconds(attempt=message.attempts, retry_after=error.retry_after)
            message_status_set(
                message=message,
                new_status=MessageStatus.QUEUED,
                reason=reason,
                fields={
                    "claim_token": None,
                    "next_attempt_at": timezone.now() + dt.timedelta(seconds=delay),
                },
            )
            if delay > backoff_ceiling():
                return SendOutcome("done", detail="retry left to the sweeper")
            return SendOutcome("retry", countdown=delay, detail=reason)
        message_status_set(
            message=message,
            new_status=MessageStatus.DEAD,
            reason=f"gave up after {message.attempts} attempts; {reason}",
            fields={"claim_token": None},
        )
        message_fallback_create(message=message, why=message.status_reason)
        return SendOutcome("done", detail="dead")
    # Permanent.
    if error.suppress_reason and message.to_address:
        suppression_add(
            tenant=message.tenant,
            channel=message.channel,
            address=message.to_address,
            lead=message.lead,
            reason=error.suppress_reason,
            note=str(error)[:500],
            source=f"{message.provider}:{message.pk}",
        )
        # A refused mailbox is a hard bounce; any other refusal means the person opted out.
        status = (
            MessageStatus.BOUNCED
            if error.suppress_reason == SuppressionReason.BOUNCE
            else MessageStatus.SUPPRESSED
        )
    else:
        status = MessageStatus.FAILED
    message_status_set(
        message=message, new_status=status, reason=reason, fields={"claim_token": None}
    )
    message_fallback_create(message=message, why=reason)
    return SendOutcome("done", detail=status)


@dataclass
class SweepResult:
    enqueued: int = 0
    stale_to_unknown: int = 0
    reconciled: int = 0
    still_unknown: int = 0


def outbox_sweep() -> SweepResult:
    """Re-enqueue due queued messages whose task was lost, turn stale `sending` rows
    into `unknown` (never back to queued), and ask providers about `unknown` ones."""
    result = SweepResult()
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.NOTIFICATIONS_STALE_SENDING_SECONDS)
    with transaction.atomic():
        stale = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(status=MessageStatus.SENDING, claimed_at__lt=stale_before)
            .order_by("pk")[:500]
        )
        for message in stale:
            message_status_set(
                message=message,
                new_status=MessageStatus.UNKNOWN,
                reason=(
                    f"claimed by {message.claimed_by} at {message.claimed_at:%Y-%m-%d %H:%M:%S}Z "
                    "and never settled: the worker died mid-send; it may have gone out"
                ),
            )
            result.stale_to_unknown += 1

    window = now - dt.timedelta(seconds=settings.NOTIFICATIONS_RECONCILE_WINDOW_SECONDS)
    for message_id in Message.objects.filter(
        status=MessageStatus.UNKNOWN, updated_at__gte=window
    ).values_list("pk", flat=True)[:200]:
        if message_reconcile(message_id=message_id):
            result.reconciled += 1
        else:
            result.still_unknown += 1
    if result.still_unknown:
        logger.warning(
            "notifications: %s message(s) in status unknown need a person: the provider "
            "cannot tell whether they went out",
            result.still_unknown,
        )

    lost_before = now - dt.timedelta(seconds=settings.NOTIFICATIONS_SWEEP_AFTER_SECONDS)
    due = list(
        Message.objects.filter(status=MessageStatus.QUEUED, updated_at__lt=lost_before)
        .exclude(not_before__gt=now)
        .exclude(next_attempt_at__gt=now)
        .order_by("pk")
        .values_list("pk", "channel")[:1000]
    )
    for message_id, channel in due:
        if message_enqueue(message_id=message_id, channel=channel):
            result.enqueued += 1
    if due:
        Message.objects.filter(pk__in=[m for m, _ in due], status=MessageStatus.QUEUED).update(
            updated_at=now
        )
    return result


def message_reconcile(*, message_id: int) -> bool:
    """Ask the provider about an `unknown` message; settle it if the provider knows."""
    message = Message.objects.select_related("tenant", "lead", "agent").get(pk=message_id)
    if message.status != MessageStatus.UNKNOWN:
        return False
    try:
        backend = backend_for(tenant=message.tenant, channel=message.channel)
        found = backend.reconcile(message)
    except PermanentError as exc:
        found, error = None, exc
    except BackendError as exc:
        logger.info("reconcile of message %s failed: %s", message_id, exc)
        return False
    else:
        error = None
    if found is None and error is None:
        return False
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message_id)
        if locked.status != MessageStatus.UNKNOWN:
            return False
        if found is not None:
            message_status_set(
                message=locked,
                new_status=found.status,
                reason="reconciled with the provider",
                fields={
                    "claim_token": None,
                    "provider_message_id": found.provider_message_id or locked.provider_message_id,
                    "cost": found.cost,
                    "cost_currency": found.cost_currency,
                },
            )
        else:
            message_status_set(
                message=locked,
                new_status=MessageStatus.FAILED,
                reason=f"reconciled with the provider: {error}",
                fields={"claim_token": None},
            )
            message_fallback_create(message=locked, why=locked.status_reason)
    return True
