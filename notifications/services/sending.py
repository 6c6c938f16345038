"""The send pipeline: claim, check suppression and rate limit, call the provider outside any
transaction, record the attempt, then retry, fall back, or settle; and the outbox sweeper."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from notifications.backends import backend_for
from notifications.backends.base import (
    BackendError,
    BaseBackend,
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
from notifications.ratelimit import ratelimit_acquire, ratelimit_acquire_many
from notifications.recipients import recipient_address
from notifications.services.messages import (
    backoff_ceiling,
    message_enqueue,
    message_fallback_create,
    message_status_set,
    message_status_set_many,
    messages_enqueue,
)
from notifications.services.suppression import (
    suppression_add,
    suppression_reason_for,
    suppression_reasons_for,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """What the task should do next: nothing ("done") or run again after `countdown`."""

    action: str  # "done" | "retry" | "defer"
    countdown: float | None = None
    detail: str = ""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _claim_transaction():
    """The transaction a claim commits in, without waiting for its WAL flush.

    A durable commit costs a disk flush (about 4 ms on the benchmark machine): the
    claim is the first of two before a provider call, and it need not be one of them.
    Nothing leaves before the attempt count commits durably (_call_prepare,
    _attempts_count), and that flush takes every earlier WAL record with it, the claim's
    included. A claim lost to a database crash before then leaves the message queued
    with no call made: the next task or the sweeper sends it, once. Inside a caller's
    transaction nothing changes (the caller's commit decides)."""
    outermost = not transaction.get_connection().in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def message_claim_for_send(*, message_id: int, token: uuid.UUID, worker: str) -> bool:
    """Take the row for this worker: queued -> sending, in one conditional UPDATE.

    Another worker holding (or having finished) the message makes this a no-op."""
    table = Message._meta.db_table
    now = timezone.now()
    with _claim_transaction(), connection.cursor() as cursor:
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
    token = uuid.uuid4()
    # The claim first: it is the common case, and only a refused claim needs to know why.
    if not message_claim_for_send(message_id=message_id, token=token, worker=worker):
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
        return SendOutcome("done", detail="claimed elsewhere")
    try:
        prepared = _call_prepare(message_id=message_id, token=token)
    except Exception:
        # No provider call was made (the attempt is counted last): give the row back for
        # the next try instead of leaving a claim the sweeper could only call unknown.
        with contextlib.suppress(DatabaseError):
            _release_claim(message_id=message_id, token=token, wait=0)
        raise
    if isinstance(prepared, SendOutcome):
        return prepared
    message, backend = prepared
    message.provider = backend.provider
    started_at, latency_ms, result, error = _provider_call(backend=backend, message=message)
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


def _provider_call(
    *, backend: BaseBackend, message: Message, contain_surprises: bool = False
) -> tuple[dt.datetime, int, SendResult | None, BackendError | None]:
    """One provider call, timed: (started_at, latency_ms, result, error).

    With `contain_surprises` (a batch), an unexpected exception becomes an unknown
    outcome instead of propagating: one message's surprise must not cost the others
    their sends, and the request may have gone out, so it is never sent again blindly."""
    started_at = timezone.now()
    clock = time.monotonic()
    result: SendResult | None = None
    error: BackendError | None = None
    try:
        result = backend.send(message)
    except BackendError as exc:
        error = exc
    except Exception as exc:
        if not contain_surprises:
            raise
        logger.exception("sending message %s failed unexpectedly", message.pk)
        error = UnknownOutcomeError(f"unexpected error: {exc!r}")
    return started_at, int((time.monotonic() - clock) * 1000), result, error


def _call_prepare(
    *, message_id: int, token: uuid.UUID
) -> SendOutcome | tuple[Message, BaseBackend]:
    """Everything between the claim and the provider call: suppression, backend, rate
    limit, and last the attempt count (committed: from here a call may have been made)."""
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
    counted = Message.objects.filter(pk=message_id, claim_token=token).update(
        attempts=message.attempts, to_address=message.to_address, provider=backend.provider
    )
    if not counted:
        # The sweeper took this claim back (the worker looked dead: no attempt counted)
        # and the message may be with another worker now: this one must not call.
        return SendOutcome("done", detail="claim taken back by the sweeper")
    return message, backend


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
    query = Message.objects.select_for_update(of=("self",))
    if error is not None:
        # Only a failure reads the tenant, lead and agent (suppression, fallback); the
        # joins cost a success half its reload (~0.3 ms CPU of ~0.6).
        query = query.select_related("tenant", "lead", "agent")
    message = query.get(pk=message_id)
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


def messages_dispatch(*, message_ids: list[int], send_here: int = 0) -> int:
    """Send messages a caller planned together (not inside a transaction): when there
    are at most `send_here` of them, right here in this process, one by one; else all
    through messages_enqueue's batch tasks. The number settled here (sent, failed,
    suppressed, or found settled by someone else).

    Sending here spares a send that follows other work in a worker (a real-time
    rescore's intervention) the publish, the broker hop and a task of its own: on the
    detection path these cost more than the send. A send here is the single send above,
    claim and all, so it happens once whoever else holds the id; what it cannot finish
    (a retry, a rate-limit or not-before deferral, an error before the provider call)
    goes on by the send task, as the task itself would have gone on."""
    ids = list(message_ids)
    if not ids:
        return 0
    if len(ids) > send_here:
        messages_enqueue(message_ids=ids)
        return 0
    settled = 0
    for message_id in ids:
        try:
            outcome = message_send(message_id=message_id)
        except Exception:
            # The claim was given back (no call made) or is held for the sweeper (a call
            # may have been made): the task's own retry policy decides what happens next.
            logger.exception("sending message %s here failed; its task takes it over", message_id)
            outcome = SendOutcome("retry")
        if outcome.action in ("retry", "defer"):
            channel = (
                Message.objects.filter(pk=message_id).values_list("channel", flat=True).first()
            )
            if channel is not None:  # None: the row is gone (retention), nothing to send
                message_enqueue(message_id=message_id, channel=channel, countdown=outcome.countdown)
        else:
            settled += 1
    return settled


# --- the batch path ---------------------------------------------------------------------------
# One task sends up to BATCH_SIZE queued messages of one tenant and channel, CHUNK at a
# time: claim the chunk in one statement, load it, check suppression and take its
# rate-limit slots at once, count its attempts (one committed UPDATE: from here a call may
# have been made), call the provider for each over the kept-alive session, and settle the
# chunk in one transaction (attempt rows, statuses, a status signal per message). A
# worker that dies mid-chunk leaves at most CHUNK counted claims, which the sweeper turns
# into `unknown` (never resent), as it does a single send's claim.


def send_batch_size() -> int:
    return settings.NOTIFICATIONS_SEND_BATCH_SIZE


def send_chunk_size() -> int:
    return settings.NOTIFICATIONS_SEND_CHUNK_SIZE


@dataclass
class BatchOutcome:
    """What a batch did; `later` holds (message id, countdown) to send again by its own
    task (a transient failure's retry, or a rate-limit deferral)."""

    claimed: int = 0
    sent: int = 0
    done: int = 0
    later: list[tuple[int, float]] = field(default_factory=list)


def messages_claim_for_send(
    *,
    tenant_id: int,
    channel: str,
    token: uuid.UUID,
    worker: str,
    limit: int,
    message_ids: list[int] | None = None,
) -> list[int]:
    """Take up to `limit` due queued messages of one tenant and channel (of `message_ids`
    only, when given) for this worker: queued -> sending in one UPDATE. Rows another
    worker holds are skipped, not waited for; the lowest ids go first.

    The pick is a MATERIALIZED CTE: as `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
    LOCKED)` the planner may run the subquery again for later rows and claim past n."""
    table = Message._meta.db_table
    now = timezone.now()
    only = "AND id = ANY(%s)" if message_ids is not None else ""
    with _claim_transaction(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH picked AS MATERIALIZED (
                 SELECT id FROM {table}
                  WHERE tenant_id = %s AND channel = %s AND status = %s
                    AND (not_before IS NULL OR not_before <= %s)
                    AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                    {only}
                  ORDER BY id
                  LIMIT %s
                    FOR UPDATE SKIP LOCKED)
            UPDATE {table} AS m
               SET status = %s, claim_token = %s, claimed_by = %s, claimed_at = %s, updated_at = %s
              FROM picked
             WHERE m.id = picked.id AND m.status = %s
            RETURNING m.id
            """,
            [
                tenant_id,
                channel,
                MessageStatus.QUEUED,
                now,
                now,
                *([list(message_ids)] if message_ids is not None else []),
                limit,
                MessageStatus.SENDING,
                token,
                worker[:200],
                now,
                now,
                MessageStatus.QUEUED,
            ],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _release_claims(*, message_ids: list[int], token: uuid.UUID, wait: float) -> None:
    if message_ids:
        Message.objects.filter(
            pk__in=message_ids, claim_token=token, status=MessageStatus.SENDING
        ).update(
            status=MessageStatus.QUEUED,
            claim_token=None,
            next_attempt_at=timezone.now() + dt.timedelta(seconds=wait) if wait else None,
            updated_at=timezone.now(),
        )


def message_send_batch(
    *,
    tenant_id: int,
    channel: str,
    message_ids: list[int] | None = None,
    limit: int | None = None,
    worker: str | None = None,
) -> BatchOutcome:
    """Send up to `limit` queued messages of one tenant and channel (of `message_ids`
    only, when given), each once. Safe to call any number of times for the same ids: a
    message another call holds or has settled is not claimed again."""
    worker = worker or worker_name()
    token = uuid.uuid4()
    outcome = BatchOutcome()
    remaining = limit or send_batch_size()
    chunk = max(1, send_chunk_size())
    backend: BaseBackend | None = None
    # A chunk is claimed only when the one before it is settled: a worker that dies
    # holds at most one chunk's claims for the sweeper, not the whole batch's.
    while remaining > 0:
        size = min(chunk, remaining)
        claimed = messages_claim_for_send(
            tenant_id=tenant_id,
            channel=channel,
            token=token,
            worker=worker,
            limit=size,
            message_ids=message_ids,
        )
        outcome.claimed += len(claimed)
        remaining -= len(claimed)
        if not claimed:
            break
        deferred = len(outcome.later)
        try:
            ready = _batch_prepare(
                message_ids=claimed, token=token, outcome=outcome, backend=backend
            )
        except Exception:
            # No provider call was made for this chunk: give back what is still held.
            with contextlib.suppress(DatabaseError):
                _release_claims(message_ids=claimed, token=token, wait=0)
            raise
        if ready is not None:
            messages, backend = ready
            # An exception here leaves the chunk's counted claims to the sweeper, which
            # will not resend them.
            _batch_send_chunk(
                messages=messages, backend=backend, token=token, worker=worker, outcome=outcome
            )
        if len(claimed) < size or len(outcome.later) > deferred:
            # Nothing more is due, or the rate limit is reached: the rest waits.
            break
    return outcome


def _batch_prepare(
    *,
    message_ids: list[int],
    token: uuid.UUID,
    outcome: BatchOutcome,
    backend: BaseBackend | None = None,
) -> tuple[list[Message], BaseBackend] | None:
    """_call_prepare for a batch: suppression and the backend settle some messages
    without a call, rate limits give some back for later; the rest are ready to count."""
    messages = list(
        Message.objects.select_related("tenant", "lead", "agent", "lead__assigned_agent")
        .filter(pk__in=message_ids, claim_token=token)
        .order_by("pk")
    )
    reasons = suppression_reasons_for(messages=messages)
    for message_id, reason in reasons.items():
        _settle_without_call(
            message_id=message_id, token=token, status=MessageStatus.SUPPRESSED, reason=reason
        )
        outcome.done += 1
    messages = [m for m in messages if m.pk not in reasons]
    if not messages:
        return None
    try:
        if backend is None:
            backend = backend_for(tenant=messages[0].tenant, channel=messages[0].channel)
        buckets = [backend.rate_limit_key(m) for m in messages]
    except PermanentError as exc:
        for message in messages:
            _settle_without_call(
                message_id=message.pk, token=token, status=MessageStatus.FAILED, reason=str(exc)
            )
            outcome.done += 1
        return None
    allowed: list[Message] = []
    by_bucket: dict[str | None, list[Message]] = {}
    for message, bucket in zip(messages, buckets, strict=True):
        by_bucket.setdefault(bucket, []).append(message)
    for bucket, group in by_bucket.items():
        if not bucket:
            allowed += group
            continue
        granted, wait = ratelimit_acquire_many(
            provider=backend.provider, key=bucket, count=len(group)
        )
        allowed += group[:granted]
        if wait is not None:
            refused = [m.pk for m in group[granted:]]
            _release_claims(message_ids=refused, token=token, wait=wait)
            outcome.later += [(message_id, wait) for message_id in refused]
    allowed.sort(key=lambda m: m.pk)
    return allowed, backend


def _attempts_count(
    *, messages: list[Message], backend: BaseBackend, token: uuid.UUID
) -> list[Message]:
    """Count one attempt for each message still held by this claim, in one committed
    UPDATE: the messages that may be sent now."""
    if not messages:
        return []
    table = Message._meta.db_table
    rows, params = [], []
    for message in messages:
        message.to_address = (
            recipient_address(channel=message.channel, lead=message.lead, agent=message.agent)
            or message.to_address
        )
        rows.append("(%s::bigint, %s)")
        params += [message.pk, message.to_address]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} AS m
               SET attempts = m.attempts + 1, to_address = v.to_address, provider = %s
              FROM (VALUES {", ".join(rows)}) AS v(id, to_address)
             WHERE m.id = v.id AND m.claim_token = %s
            RETURNING m.id, m.attempts
            """,
            [backend.provider, *params, token],
        )
        counted = dict(cursor.fetchall())
    held = []
    for message in messages:
        if message.pk in counted:
            # The sweeper may have taken a claim back (the worker looked dead): those
            # are with another worker now and this one must not call for them.
            message.attempts = counted[message.pk]
            message.provider = backend.provider
            held.append(message)
    return held


def _batch_send_chunk(
    *,
    messages: list[Message],
    backend: BaseBackend,
    token: uuid.UUID,
    worker: str,
    outcome: BatchOutcome,
) -> None:
    calls: list[tuple[Message, dt.datetime, int, SendResult | None, BackendError | None]] = []
    for message in _attempts_count(messages=messages, backend=backend, token=token):
        calls.append(
            (message, *_provider_call(backend=backend, message=message, contain_surprises=True))
        )
    sent = [c for c in calls if c[4] is None]
    others = [c for c in calls if c[4] is not None]
    if sent:
        outcome.sent += _settle_sent(
            calls=sent, backend_path=backend.dotted_path, token=token, worker=worker
        )
        outcome.done += len(sent)
    for message, started_at, latency_ms, result, error in others:
        # Failures take the single-send path: retries, unknown, suppression, fallback.
        settled = _settle_after_call(
            message_id=message.pk,
            token=token,
            backend_path=backend.dotted_path,
            worker=worker,
            started_at=started_at,
            latency_ms=latency_ms,
            result=result,
            error=error,
        )
        if settled.action in ("retry", "defer"):
            outcome.later.append((message.pk, settled.countdown or 0.0))
        else:
            outcome.done += 1


@transaction.atomic
def _settle_sent(
    *,
    calls: list[tuple[Message, dt.datetime, int, SendResult | None, BackendError | None]],
    backend_path: str,
    token: uuid.UUID,
    worker: str,
) -> int:
    """_settle_after_call for the successful calls of a chunk: the attempt rows in one
    INSERT, the statuses in one UPDATE, a status signal for each message."""
    by_id = {message.pk: (message, result) for message, _, _, result, _ in calls}
    locked = {
        m.pk: m
        for m in Message.objects.select_for_update().filter(pk__in=list(by_id)).order_by("pk")
    }
    attempts = [
        DeliveryAttempt(
            tenant_id=message.tenant_id,
            message=locked[message.pk],
            number=locked[message.pk].attempts,
            backend=backend_path,
            started_at=started_at,
            latency_ms=latency_ms,
            status_code=result.status_code,
            outcome=AttemptOutcome.SENT,
            error="",
            provider_message_id=result.provider_message_id,
            worker=worker[:200],
        )
        for message, started_at, latency_ms, result, _ in calls
    ]
    DeliveryAttempt.objects.bulk_create(attempts)
    for attempt in attempts:
        # bulk_create sends no post_save; what listens to one attempt row still hears it.
        post_save.send(
            sender=DeliveryAttempt, instance=attempt, created=True, raw=False, using="default"
        )
    changes = []
    settled = 0
    for message_id, (_, result) in by_id.items():
        message = locked[message_id]
        fields = {
            "claim_token": None,
            "status_reason": "",
            "provider_message_id": result.provider_message_id or message.provider_message_id,
            "cost": result.cost,
            "cost_currency": result.cost_currency,
            "next_attempt_at": None,
        }
        if message.claim_token != token:
            # Settled by someone else meanwhile (a provider callback); the attempt is on record.
            if not message.provider_message_id:
                message.provider_message_id = result.provider_message_id
                message.save(update_fields=["provider_message_id", "updated_at"])
        elif message.status in (MessageStatus.SENDING, MessageStatus.UNKNOWN, MessageStatus.DEAD):
            changes.append((message, result.status, fields))
            settled += 1
        else:
            # A callback already moved it further: keep that status.
            for name, value in fields.items():
                setattr(message, name, value)
            message.save(update_fields=[*fields, "updated_at"])
            settled += 1
    message_status_set_many(changes=changes)
    return settled


@dataclass
class SweepResult:
    enqueued: int = 0
    stale_to_unknown: int = 0
    stale_requeued: int = 0
    reconciled: int = 0
    still_unknown: int = 0


def outbox_sweep() -> SweepResult:
    """Re-enqueue due queued messages whose task was lost, turn stale `sending` rows
    into `unknown` (back to queued only when no provider call was started), and ask
    providers about `unknown` ones."""
    result = SweepResult()
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.NOTIFICATIONS_STALE_SENDING_SECONDS)
    requeued: list[tuple[int, str]] = []
    with transaction.atomic():
        stale = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(status=MessageStatus.SENDING, claimed_at__lt=stale_before)
            .order_by("pk")[:500]
        )
        for message in stale:
            if message.attempts <= DeliveryAttempt.objects.filter(message=message).count():
                # The attempt is counted (committed) just before the provider call, and
                # every call made is recorded: this worker died before calling. Nothing
                # went out, so the message may go again.
                message_status_set(
                    message=message,
                    new_status=MessageStatus.QUEUED,
                    reason=(
                        f"claimed by {message.claimed_by} at "
                        f"{message.claimed_at:%Y-%m-%d %H:%M:%S}Z; the worker died before "
                        "calling the provider"
                    ),
                    fields={"claim_token": None},
                )
                requeued.append((message.pk, message.channel))
                result.stale_requeued += 1
                continue
            message_status_set(
                message=message,
                new_status=MessageStatus.UNKNOWN,
                reason=(
                    f"claimed by {message.claimed_by} at {message.claimed_at:%Y-%m-%d %H:%M:%S}Z "
                    "and never settled: the worker died mid-send; it may have gone out"
                ),
            )
            result.stale_to_unknown += 1
    for message_id, channel in requeued:
        message_enqueue(message_id=message_id, channel=channel)

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
