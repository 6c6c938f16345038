"""Creating, enqueueing, cancelling and moving the status of outbox messages."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Sequence

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from churnapp.exceptions import ApplicationError, ConflictError
from churnapp.models import Agent, Lead, Tenant
from churnapp.prepared import execute_prepared
from notifications.email_content import UNSUBSCRIBE_PLACEHOLDER
from notifications.models import CHANNEL_QUEUE, Channel, Message, MessageStatus, Template
from notifications.recipients import recipient_address
from notifications.signals import message_status_changed, message_statuses_changed
from notifications.templating import UnknownVariableError, links_extract, render_html, render_text

PROGRESS = [
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.UNKNOWN,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
    MessageStatus.REPLIED,
]
ENGAGED = {MessageStatus.OPENED, MessageStatus.CLICKED, MessageStatus.REPLIED}
FAILURES = {MessageStatus.FAILED, MessageStatus.BOUNCED, MessageStatus.DEAD}
LOCAL_FINAL = {MessageStatus.SUPPRESSED, MessageStatus.CANCELLED}
# Channels whose content is not a template of ours (GHL runs its own workflow).
TEMPLATE_OPTIONAL = {Channel.GHL_WORKFLOW}


def status_may_move(current: str, new: str) -> bool:
    """Whether a (possibly late or out-of-order) report may move a message to `new`.

    Progress only goes forward (sent < delivered < opened < clicked < replied); a
    failure cannot undo a delivery; engagement proves receipt and wins over failure;
    a provider's word that it sent a message overrides our own `unknown`/`dead` guess;
    suppressed and cancelled messages never went out and never move."""
    if current == new or current in LOCAL_FINAL:
        return False
    if new in ENGAGED:
        return current in FAILURES or PROGRESS.index(new) > PROGRESS.index(current)
    if new in FAILURES:
        return current in (
            MessageStatus.QUEUED,
            MessageStatus.SENDING,
            MessageStatus.UNKNOWN,
            MessageStatus.SENT,
        )
    if new in (MessageStatus.SENT, MessageStatus.DELIVERED):
        if current == MessageStatus.DEAD:
            return True
        return current in PROGRESS and PROGRESS.index(new) > PROGRESS.index(current)
    return False


_TIMESTAMP_FIELD = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.OPENED: "opened_at",
    MessageStatus.CLICKED: "clicked_at",
    MessageStatus.REPLIED: "replied_at",
}


def _status_apply(
    *,
    message: Message,
    new_status: str,
    reason: str = "",
    occurred_at: dt.datetime | None = None,
    fields: dict | None = None,
) -> tuple[str, set[str]]:
    """Move the instance (not the row) to `new_status`: the previous status, and the
    fields to write."""
    previous = message.status
    message.status = new_status
    if reason:
        message.status_reason = reason
    update = {"status", "status_reason", "updated_at"}
    stamp = _TIMESTAMP_FIELD.get(new_status)
    when = occurred_at or timezone.now()
    if stamp and getattr(message, stamp) is None:
        setattr(message, stamp, when)
        update.add(stamp)
    # Reaching a later stage implies the message went out.
    if new_status in ENGAGED | {MessageStatus.DELIVERED} and message.sent_at is None:
        message.sent_at = when
        update.add("sent_at")
    for name, value in (fields or {}).items():
        setattr(message, name, value)
        update.add(name)
    return previous, update


def _status_change(*, message: Message, previous: str) -> dict:
    """message_status_changed's arguments for a row just moved from `previous`."""
    return {
        "tenant_id": message.tenant_id,
        "message_id": message.pk,
        "lead_id": message.lead_id,
        "agent_id": message.agent_id,
        "channel": message.channel,
        "previous_status": previous,
        "new_status": message.status,
        "reason": message.status_reason,
        "metadata": message.metadata,
    }


def _status_announce(*, message: Message, previous: str) -> None:
    message_status_changed.send(
        sender=Message, **_status_change(message=message, previous=previous)
    )


def message_status_set(
    *,
    message: Message,
    new_status: str,
    reason: str = "",
    occurred_at: dt.datetime | None = None,
    fields: dict | None = None,
) -> None:
    """Write a status the caller has already decided on, and tell the apps above.

    The caller holds the row (select_for_update or a claim). The signal is sent in the
    same transaction, so receivers' writes commit or roll back with it."""
    previous, update = _status_apply(
        message=message,
        new_status=new_status,
        reason=reason,
        occurred_at=occurred_at,
        fields=fields,
    )
    # Written as message_status_set_many writes (no post_save: what listens to one, the
    # tracking log and the fallback metric, acts on created rows only). The ORM's
    # save(update_fields=...) compiled its UPDATE anew on every callback.
    message.updated_at = timezone.now()
    _rows_update(messages=[message], names=sorted(update))
    _status_announce(message=message, previous=previous)


def _rows_update(*, messages: list[Message], names: list[str]) -> None:
    """One UPDATE ... FROM (VALUES ...) writing `names` of each instance to its row
    (bulk_update's CASE per field and row costs more to build than the rows to write)."""
    fields, head, row, tail, name = _rows_update_sql(tuple(names))
    params: list = []
    for message in messages:
        params.append(message.pk)
        params += [f.get_db_prep_save(getattr(message, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        if len(messages) == 1:
            # A callback's one message: a prepared statement per field list (a handful
            # recur), parsed and planned once per connection (churnapp.prepared).
            execute_prepared(cursor, [(name, head + row + tail)], params)
        else:
            cursor.execute(head + ", ".join([row] * len(messages)) + tail, params)


@functools.cache
def _rows_update_sql(names: tuple[str, ...]) -> tuple[list, str, str, str, str]:
    """The fields and the SQL around the VALUES rows of _rows_update, per field list: a
    handful of lists recur (each status write names the same few), and building it
    (db_type, quoting) was a tenth of an open pixel's status write."""
    fields = [Message._meta.get_field(name) for name in names]
    casts = ", ".join(f"%s::{f.db_type(connection)}" for f in fields)
    table = connection.ops.quote_name(Message._meta.db_table)
    columns = [connection.ops.quote_name(f.column) for f in fields]
    head = (
        f"UPDATE {table} AS m SET " + ", ".join(f"{c} = v.{c}" for c in columns) + " FROM (VALUES "
    )
    tail = f") AS v(id, {', '.join(columns)}) WHERE m.id = v.id"
    name = "churn_message_update_" + hashlib.sha1(",".join(names).encode()).hexdigest()[:12]
    return fields, head, f"(%s::bigint, {casts})", tail, name


def message_status_set_many(*, changes: Sequence[tuple[Message, str, dict]]) -> None:
    """message_status_set for many held rows at once: one UPDATE, then one
    message_statuses_changed with every row's change in order (receivers' writes join
    the caller's transaction as above, and can be one statement too: a send chunk's
    lifecycle events were one INSERT per message).

    `changes` holds (message, new_status, fields); the reason is cleared by the caller
    through `fields` when it must be."""
    if not changes:
        return
    now = timezone.now()
    written: set[str] = set()
    announced: list[tuple[Message, str]] = []
    for message, new_status, fields in changes:
        previous, update = _status_apply(
            message=message, new_status=new_status, occurred_at=now, fields=fields
        )
        message.updated_at = now
        written |= update
        announced.append((message, previous))
    # Every row writes every field named for any row: a field another row did not
    # change is written back with the value it already holds (the rows are locked).
    _rows_update(messages=[m for m, _, _ in changes], names=sorted(written))
    message_statuses_changed.send(
        sender=Message,
        changes=[_status_change(message=m, previous=previous) for m, previous in announced],
    )


@transaction.atomic
def message_status_record(
    *, message_id: int, new_status: str, reason: str = "", occurred_at: dt.datetime | None = None
) -> bool:
    """Apply a provider's report of a status; ignored (False) when it would move backwards."""
    message = Message.objects.select_for_update().get(pk=message_id)
    if not status_may_move(message.status, new_status):
        return False
    fields = {}
    if message.status in (MessageStatus.SENDING, MessageStatus.UNKNOWN):
        # A provider's callback settled what the worker could not: the claim is over.
        fields = {"claim_token": None}
    message_status_set(
        message=message,
        new_status=new_status,
        reason=reason,
        occurred_at=occurred_at,
        fields=fields,
    )
    return True


def _json_safe(context: dict) -> dict:
    return json.loads(json.dumps(context, default=str))


def content_render(
    *,
    tenant: Tenant,
    channel: str,
    template_key: str,
    variant: str,
    context: dict,
    lead: Lead | None,
    agent: Agent | None,
    templates: dict | None = None,
) -> dict:
    """The rendered subject/text/html of a template for these recipients, and its links.
    `templates`, when given, keeps the templates looked up by (channel, key, variant)
    for the next call (a batch renders the same few templates for many leads)."""
    cache_key = (tenant.pk, channel, template_key, variant)
    if templates is not None and cache_key in templates:
        template = templates[cache_key]
    else:
        candidates = Template.objects.filter(
            tenant=tenant, channel=channel, key=template_key, is_active=True
        )
        template = (
            candidates.filter(variant=variant).first() or candidates.filter(variant="A").first()
        )
        if templates is not None:
            templates[cache_key] = template
    if template is None:
        if channel in TEMPLATE_OPTIONAL:
            return {"template": None, "subject": "", "body_text": "", "body_html": "", "links": []}
        raise ApplicationError(
            f"no active {channel} template {template_key!r} (variant {variant!r})",
            code="template_missing",
            details={"channel": channel, "template_key": template_key, "variant": variant},
        )
    full = {
        "lead": lead,
        "agent": agent or (lead.assigned_agent if lead is not None else None),
        "tenant": tenant,
        "risk_reasons": [],
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
        **context,
    }
    try:
        subject = render_text(template.subject, full) if template.subject else ""
        body_text = render_text(template.body_text, full)
        body_html = render_html(template.body_html, full) if template.body_html else ""
    except UnknownVariableError as exc:
        raise ApplicationError(
            f"template {template_key!r} uses a variable the context lacks: {exc}",
            code="template_context",
        ) from exc
    return {
        "template": template,
        "subject": subject,
        "body_text": body_text,
        "body_html": body_html,
        "links": [
            u for u in links_extract(body_html, body_text) if UNSUBSCRIBE_PLACEHOLDER not in u
        ],
    }


def _sms_first_to_lead(lead: Lead) -> bool:
    return not (
        Message.objects.filter(lead=lead, channel=Channel.SMS)
        .exclude(
            status__in=[MessageStatus.SUPPRESSED, MessageStatus.CANCELLED, MessageStatus.FAILED]
        )
        .exists()
    )


def _validate_request(
    *, tenant: Tenant, channel: str, lead: Lead | None, agent: Agent | None, fallback_channels
) -> None:
    if channel not in Channel.values:
        raise ApplicationError(f"unknown channel {channel!r}", code="invalid_channel")
    bad = [c for c in fallback_channels if c not in Channel.values]
    if bad:
        raise ApplicationError(f"unknown fallback channels {bad}", code="invalid_channel")
    if lead is None and agent is None:
        raise ApplicationError("a message needs a lead or an agent", code="no_recipient")
    if lead is not None and lead.tenant_id != tenant.pk:
        raise ApplicationError("the lead belongs to another tenant", code="tenant_mismatch")
    if agent is not None and agent.tenant_id != tenant.pk:
        raise ApplicationError("the agent belongs to another tenant", code="tenant_mismatch")
    if channel in (Channel.AGENT_ALERT,) and agent is None:
        raise ApplicationError(f"{channel} goes to an agent", code="no_recipient")
    if channel in (Channel.GHL_WORKFLOW, Channel.GHL_TASK, Channel.IN_APP) and lead is None:
        raise ApplicationError(f"{channel} needs a lead", code="no_recipient")


def _message_create(*, fields: dict) -> tuple[Message, bool]:
    """Insert the row, or return the one already holding the idempotency key."""
    try:
        with transaction.atomic():
            return Message.objects.create(**fields), True
    except IntegrityError:
        existing = Message.objects.filter(
            tenant=fields["tenant"], idempotency_key=fields["idempotency_key"]
        ).first()
        if existing is None:
            raise
        return existing, False


def _idempotency_key_check(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > 255:
        raise ApplicationError("idempotency_key is required (at most 255 characters)")


def _with_opt_out_text(body_text: str) -> str:
    """The first SMS to a lead tells them how to opt out."""
    return f"{body_text}\n{settings.NOTIFICATIONS_SMS_OPT_OUT_TEXT}"


def _request_fields(
    *,
    tenant: Tenant,
    channel: str,
    lead: Lead | None,
    agent: Agent | None,
    template_key: str,
    variant: str,
    context: dict,
    idempotency_key: str,
    fallback_channels: Sequence[str],
    not_before: dt.datetime | None,
    metadata: dict | None,
    fallback_of: Message | None,
    templates: dict | None = None,
) -> dict:
    """Validate a request and render its content: the new row's fields (before the
    first-SMS opt-out text, which depends on the lead's earlier messages). Raises
    ApplicationError as message_request documents."""
    if not_before is not None and timezone.is_naive(not_before):
        raise ApplicationError("not_before must carry a time zone")
    fallback_channels = list(fallback_channels)
    _validate_request(
        tenant=tenant, channel=channel, lead=lead, agent=agent, fallback_channels=fallback_channels
    )
    if channel == Channel.GHL_TASK and agent is None and lead is not None:
        agent = lead.assigned_agent
    rendered = content_render(
        tenant=tenant,
        channel=channel,
        template_key=template_key,
        variant=variant,
        context=context,
        lead=lead,
        agent=agent,
        templates=templates,
    )
    return {
        "tenant": tenant,
        "lead": lead,
        "agent": agent,
        "channel": channel,
        "template": rendered["template"],
        "template_key": template_key,
        "variant": rendered["template"].variant if rendered["template"] else variant,
        "subject": rendered["subject"],
        "body_text": rendered["body_text"],
        "body_html": rendered["body_html"],
        "links": rendered["links"],
        "to_address": recipient_address(channel=channel, lead=lead, agent=agent),
        "idempotency_key": idempotency_key,
        "max_attempts": settings.NOTIFICATIONS_MAX_ATTEMPTS,
        "not_before": not_before,
        "metadata": metadata or {},
        "fallback_channels": fallback_channels,
        "fallback_of": fallback_of,
        "render_context": _json_safe(context),
    }


@transaction.atomic
def message_request(
    *,
    tenant: Tenant,
    channel: str,
    lead: Lead | None = None,
    agent: Agent | None = None,
    template_key: str,
    variant: str = "A",
    context: dict,
    idempotency_key: str,
    fallback_channels: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    metadata: dict | None = None,
    fallback_of: Message | None = None,
    enqueue: bool = True,
) -> Message:
    """Render and store one message, and enqueue its send after commit.

    A second call with the same idempotency key returns the first row unchanged.
    `enqueue=False` leaves the send to the caller, who plans several messages in one
    transaction and hands them to `messages_dispatch` together after commit (an agent
    alert's companion is still enqueued here)."""
    _idempotency_key_check(idempotency_key)
    existing = Message.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    fields = _request_fields(
        tenant=tenant,
        channel=channel,
        lead=lead,
        agent=agent,
        template_key=template_key,
        variant=variant,
        context=context,
        idempotency_key=idempotency_key,
        fallback_channels=fallback_channels,
        not_before=not_before,
        metadata=metadata,
        fallback_of=fallback_of,
    )
    if channel == Channel.SMS and lead is not None and _sms_first_to_lead(lead):
        fields["body_text"] = _with_opt_out_text(fields["body_text"])
    message, created = _message_create(fields=fields)
    if not created:
        return message
    if channel == Channel.AGENT_ALERT:
        _agent_alert_companion_create(alert=message)
    if enqueue:
        message_enqueue_on_commit(message=message)
    return message


class MessageBatch:
    """Messages requested together in one transaction (the interventions a scoring chunk
    plans): each request is checked and rendered as `message_request` would do it, and
    the new rows are written by one INSERT in `write()` instead of a savepoint, a read of
    the key, a template lookup and an INSERT apiece.

    `request()` answers as message_request does, at once: the existing row for a known
    key, or the new (unsaved) Message, or ApplicationError for a request that cannot be
    made. The first-SMS opt-out text is settled in `write()` (one read for every lead),
    as it would be one by one: only the lead's first SMS, counting those of the batch.
    `announce(message)` then does, for a new row, what its creation does one by one
    (post_save: the lifecycle log's "queued" event; an agent alert's companion), so the
    caller can keep each intervention's events in their one-by-one order. Nothing is
    enqueued: the caller hands the rows to `messages_dispatch` after commit.

    The caller holds what makes its keys its own (interventions: the leads' row locks),
    so a key cannot be inserted by another transaction between the read and the INSERT;
    if it were, the INSERT fails and the caller's transaction with it."""

    def __init__(self, *, tenant: Tenant) -> None:
        self.tenant = tenant
        self._existing: dict[str, Message | None] = {}
        self._templates: dict = {}
        self._new: list[Message] = []

    def prefetch(self, *, idempotency_keys: Sequence[str]) -> None:
        """Read the rows of these keys in one query (later requests need none)."""
        keys = [k for k in dict.fromkeys(idempotency_keys) if k not in self._existing]
        if not keys:
            return
        self._existing.update(dict.fromkeys(keys))
        for message in Message.objects.filter(tenant=self.tenant, idempotency_key__in=keys):
            self._existing[message.idempotency_key] = message

    def request(
        self,
        *,
        channel: str,
        lead: Lead | None = None,
        agent: Agent | None = None,
        template_key: str,
        variant: str = "A",
        context: dict,
        idempotency_key: str,
        fallback_channels: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        metadata: dict | None = None,
    ) -> Message:
        _idempotency_key_check(idempotency_key)
        self.prefetch(idempotency_keys=[idempotency_key])
        existing = self._existing[idempotency_key]
        if existing is not None:
            return existing
        fields = _request_fields(
            tenant=self.tenant,
            channel=channel,
            lead=lead,
            agent=agent,
            template_key=template_key,
            variant=variant,
            context=context,
            idempotency_key=idempotency_key,
            fallback_channels=fallback_channels,
            not_before=not_before,
            metadata=metadata,
            fallback_of=None,
            templates=self._templates,
        )
        message = Message(**fields)
        self._existing[idempotency_key] = message
        self._new.append(message)
        return message

    def write(self) -> list[Message]:
        """Insert the new rows (in request order); they get their ids."""
        new, self._new = self._new, []
        if not new:
            return []
        sms_leads = {m.lead_id for m in new if m.channel == Channel.SMS and m.lead_id}
        had_sms = set()
        if sms_leads:
            had_sms = set(
                Message.objects.filter(lead_id__in=sms_leads, channel=Channel.SMS)
                .exclude(
                    status__in=[
                        MessageStatus.SUPPRESSED,
                        MessageStatus.CANCELLED,
                        MessageStatus.FAILED,
                    ]
                )
                .values_list("lead_id", flat=True)
                .distinct()
            )
        for message in new:
            if (
                message.channel == Channel.SMS
                and message.lead_id
                and message.lead_id not in had_sms
            ):
                message.body_text = _with_opt_out_text(message.body_text)
                had_sms.add(message.lead_id)
        Message.objects.bulk_create(new)
        return new

    @staticmethod
    def announce(message: Message) -> None:
        """What creating `message` tells and starts one by one (see the class)."""
        # bulk_create sends no post_save; what listens to a new row still hears it.
        post_save.send(sender=Message, instance=message, created=True, raw=False, using="default")
        if message.channel == Channel.AGENT_ALERT:
            _agent_alert_companion_create(alert=message)


def _agent_alert_companion_create(*, alert: Message) -> Message | None:
    """The agent alert's SMS or email copy: a Message of its own, so it is retried,
    suppressed, rate limited and shown in the admin like any other send."""
    from notifications.models import ChannelConfig

    config = ChannelConfig.objects.filter(tenant=alert.tenant, channel=Channel.AGENT_ALERT).first()
    preference = (config.options.get("companion") if config else None) or "auto"
    agent = alert.agent
    if preference == "none":
        return None
    if preference == "sms" or (preference == "auto" and agent.phone):
        channel = Channel.SMS
    elif preference == "email" or (preference == "auto" and agent.email):
        channel = Channel.EMAIL
    else:
        return None
    companion, created = _message_create(
        fields={
            "tenant": alert.tenant,
            "agent": agent,
            "lead": None,
            "channel": channel,
            "template": alert.template,
            "template_key": alert.template_key,
            "variant": alert.variant,
            "subject": alert.subject or "Alert",
            "body_text": alert.body_text,
            "body_html": "",
            "links": alert.links,
            "to_address": recipient_address(channel=channel, lead=None, agent=agent),
            "idempotency_key": f"{alert.idempotency_key}:companion:{channel}"[:255],
            "max_attempts": alert.max_attempts,
            "not_before": alert.not_before,
            "metadata": alert.metadata,
            "parent": alert,
            "render_context": alert.render_context,
        }
    )
    if created:
        message_enqueue_on_commit(message=companion)
    return companion


def message_enqueue_on_commit(*, message: Message, countdown: float | None = None) -> None:
    message_id, channel, not_before = message.pk, message.channel, message.not_before
    # robust: the row is the outbox; if the broker is down the enqueue is logged and the
    # sweeper publishes it later, and the committed work that planned it stands.
    transaction.on_commit(
        lambda: message_enqueue(
            message_id=message_id, channel=channel, not_before=not_before, countdown=countdown
        ),
        robust=True,
    )


def backoff_ceiling() -> float:
    """Delays above this are left to the sweeper: a Redis broker redelivers an unacked
    ETA task after the visibility timeout, which would run it twice."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    return min(float(settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS), visibility * 0.8)


def message_enqueue(
    *,
    message_id: int,
    channel: str,
    not_before: dt.datetime | None = None,
    countdown: float | None = None,
) -> bool:
    """Publish the send task (not inside a transaction). False when left to the sweeper."""
    from notifications.tasks import message_send

    delay = countdown or 0.0
    if not_before is not None:
        delay = max(delay, (not_before - timezone.now()).total_seconds())
    if delay > backoff_ceiling():
        return False
    message_send.apply_async(
        args=[message_id], queue=CHANNEL_QUEUE[channel], countdown=delay if delay > 0 else None
    )
    return True


def messages_enqueue(*, message_ids: Sequence[int]) -> int:
    """Publish the sends of many messages (not inside a transaction): one batch task per
    tenant and channel for each `NOTIFICATIONS_SEND_BATCH_SIZE` of them that are due, the
    tenants' batches interleaved so that no account's rate limit holds the others up;
    messages due later get their own delayed task as message_enqueue gives them. The
    number of tasks published."""
    from notifications.services.sending import send_batch_size
    from notifications.tasks import message_send_batch

    now = timezone.now()
    groups: dict[tuple[int, str], list[int]] = {}
    published = 0
    rows = (
        Message.objects.filter(pk__in=list(message_ids), status=MessageStatus.QUEUED)
        .order_by("pk")
        .values_list("pk", "tenant_id", "channel", "not_before", "next_attempt_at")
    )
    for pk, tenant_id, channel, not_before, next_attempt_at in rows:
        due = max(filter(None, [not_before, next_attempt_at]), default=None)
        if due is not None and due > now:
            countdown = (due - now).total_seconds()
            published += message_enqueue(message_id=pk, channel=channel, countdown=countdown)
            continue
        groups.setdefault((tenant_id, channel), []).append(pk)
    size = send_batch_size()
    batches = {
        key: [ids[i : i + size] for i in range(0, len(ids), size)] for key, ids in groups.items()
    }
    for round_ in range(max((len(b) for b in batches.values()), default=0)):
        for (tenant_id, channel), chunks in batches.items():
            if round_ < len(chunks):
                message_send_batch.apply_async(
                    args=[tenant_id, channel, chunks[round_]], queue=CHANNEL_QUEUE[channel]
                )
                published += 1
    return published


@transaction.atomic
def message_cancel(*, message: Message, reason: str = "cancelled by caller") -> Message:
    """Cancel a message that has not been handed to a provider yet."""
    locked, cancelled = _withdraw(message, reason)
    if not cancelled:
        raise ConflictError(
            f"message {locked.pk} is {locked.status}; only queued messages can be cancelled",
            code="not_cancellable",
        )
    return locked


@transaction.atomic
def message_withdraw(*, message: Message, reason: str = "cancelled by caller") -> bool:
    """Cancel `message` if it is still queued; True if this call cancelled it.

    For callers that give up on a message they did not hand out themselves (an
    intervention resolved by the lead's reply): a send worker may have claimed it since
    the caller read it. The status is checked under the row lock, so a claimed message
    goes on to its provider and settles as usual, and the caller's work is not undone."""
    return _withdraw(message, reason)[1]


def _withdraw(message: Message, reason: str) -> tuple[Message, bool]:
    locked = Message.objects.select_for_update().get(pk=message.pk)
    if locked.status != MessageStatus.QUEUED:
        return locked, False
    message_status_set(message=locked, new_status=MessageStatus.CANCELLED, reason=reason)
    return locked, True


def message_fallback_create(*, message: Message, why: str) -> Message | None:
    """Start the next channel the caller gave as fallback; record why on the original.

    Runs inside the transaction that failed or suppressed `message`."""
    remaining = list(message.fallback_channels)
    while remaining:
        channel = remaining.pop(0)
        try:
            with transaction.atomic():
                fallback = message_request(
                    tenant=message.tenant,
                    channel=channel,
                    lead=message.lead,
                    agent=message.agent,
                    template_key=message.template_key,
                    variant=message.variant or "A",
                    context=message.render_context or {},
                    idempotency_key=f"{message.idempotency_key}:fb:{channel}"[:255],
                    fallback_channels=remaining,
                    metadata=message.metadata,
                    fallback_of=message,
                )
        except ApplicationError as exc:
            message.status_reason = (
                f"{message.status_reason}; fallback to {channel} impossible: {exc.message}"
            )
            continue
        message.status_reason = f"{why}; fell back to {channel} (message {fallback.pk})"
        message.save(update_fields=["status_reason", "updated_at"])
        return fallback
    if message.fallback_channels:
        message.save(update_fields=["status_reason", "updated_at"])
    return None
