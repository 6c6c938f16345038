"""Provider callbacks and engagement: statuses, opens, clicks, replies, inbound SMS keywords."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from churnapp.models import ActivityKind, Lead, Tenant
from churnapp.prepared import execute_prepared
from churnapp.services.activities import activity_record
from notifications.backends.twilio import OPT_OUT_ERRORS
from notifications.backends.twilio import STATUS_MAP as TWILIO_STATUS_MAP
from notifications.models import (
    Channel,
    Message,
    MessageEvent,
    MessageEventKind,
    MessageStatus,
    SuppressionReason,
)
from notifications.services.messages import (
    message_fallback_create,
    message_status_set,
    status_may_move,
)
from notifications.services.suppression import suppression_add, suppression_lift
from notifications.signals import message_engaged

logger = logging.getLogger(__name__)

OPT_OUT_KEYWORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_KEYWORDS = {"START", "UNSTOP", "YES"}
HELP_KEYWORDS = {"HELP", "INFO"}
# How far back an inbound SMS or email counts as a reply to our last message.
REPLY_WINDOW = dt.timedelta(days=14)


_EVENT_INSERT = (
    f"INSERT INTO {MessageEvent._meta.db_table} (tenant_id, message_id, provider, event_id,"
    " kind, status, occurred_at, payload, received_at)"
)
_EVENT_ONCE = "ON CONFLICT (tenant_id, provider, event_id) DO NOTHING RETURNING id"


def _event_values(
    *,
    provider: str,
    event_id: str,
    kind: str,
    status: str,
    occurred_at: dt.datetime | None,
    payload: dict | None,
) -> list:
    """A provider event's values after tenant_id and message_id, as _EVENT_INSERT lists them."""
    now = timezone.now()
    return [
        provider,
        event_id[:255],
        kind,
        status[:32],
        occurred_at or now,
        json.dumps(payload or {}),
        now,
    ]


def event_store(
    *,
    tenant_id: int,
    provider: str,
    event_id: str,
    kind: str,
    status: str = "",
    message: Message | None = None,
    occurred_at: dt.datetime | None = None,
    payload: dict | None = None,
) -> bool:
    """Store a callback once; False when this event id was seen before (a duplicate)."""
    # ON CONFLICT on the unique key rather than a savepoint around an insert that may
    # fail: SAVEPOINT and RELEASE were two of a callback's dozen round trips.
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_EVENT_INSERT} VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) {_EVENT_ONCE}",
            [
                tenant_id,
                message.pk if message is not None else None,
                *_event_values(
                    provider=provider,
                    event_id=event_id,
                    kind=kind,
                    status=status,
                    occurred_at=occurred_at,
                    payload=payload,
                ),
            ],
        )
        return cursor.fetchone() is not None


def _apply(message: Message, new_status: str, reason: str, occurred_at: dt.datetime | None) -> bool:
    """Move a locked message if the order of events allows it; engagement also signals."""
    if not status_may_move(message.status, new_status):
        return False
    fields = (
        {"claim_token": None}
        if message.status in (MessageStatus.SENDING, MessageStatus.UNKNOWN)
        else {}
    )
    message_status_set(
        message=message,
        new_status=new_status,
        reason=reason,
        occurred_at=occurred_at,
        fields=fields,
    )
    return True


def _engage(message: Message, kind: str, occurred_at: dt.datetime) -> None:
    message_engaged.send(
        sender=Message,
        tenant_id=message.tenant_id,
        message_id=message.pk,
        lead_id=message.lead_id,
        kind=kind,
        metadata=message.metadata,
        occurred_at=occurred_at,
    )


@functools.cache
def _converted_fields() -> tuple[tuple[int, object], ...]:
    """(position, field) of the message's concrete fields that convert database values."""
    return tuple(
        (k, f) for k, f in enumerate(Message._meta.concrete_fields) if hasattr(f, "from_db_value")
    )


@functools.cache
def _lock_and_store_sql() -> str:
    """_message_lock_and_store's statement: every concrete column of the locked message
    in field order, then whether the event was new (built once, not on every open)."""
    columns = ", ".join(
        f"m.{connection.ops.quote_name(f.column)}" for f in Message._meta.concrete_fields
    )
    return f"""
        WITH m AS (SELECT * FROM {Message._meta.db_table} WHERE id = %s::bigint FOR UPDATE),
        ev AS (
            {_EVENT_INSERT}
            SELECT m.tenant_id, m.id, %s::text, %s::text, %s::text, %s::text,
                   %s::timestamptz, %s::jsonb, %s::timestamptz FROM m {_EVENT_ONCE}
        )
        SELECT {columns}, EXISTS (SELECT 1 FROM ev) FROM m
    """


def _message_lock_and_store(
    *,
    message_id: int,
    provider: str,
    event_id: str,
    kind: str,
    occurred_at: dt.datetime,
    payload: dict | None,
) -> tuple[Message, bool]:
    """Lock the message and store the callback's event once, in one statement: the
    message, and False when this event id was seen before (a duplicate).

    An engagement callback's first two steps as one round trip of plain SQL: the ORM's
    lock compiled the message's forty-odd columns every call (a quarter of an open
    pixel's time), and event_store was a second round trip."""
    params = [
        message_id,
        *_event_values(
            provider=provider,
            event_id=event_id,
            kind=kind,
            status=kind,
            occurred_at=occurred_at,
            payload=payload,
        ),
    ]
    with connection.cursor() as cursor:
        # A prepared statement (churnapp.prepared): parsed and planned once per connection.
        execute_prepared(cursor, [("churn_message_lock_store", _lock_and_store_sql())], params)
        row = cursor.fetchone()
    if row is None:
        raise Message.DoesNotExist(f"no message {message_id}")
    # Every concrete field in order, so from_db takes its positional fast path; only the
    # JSON fields need their converter (a RawQuerySet resolved both anew on every call).
    values = list(row[:-1])
    for k, field in _converted_fields():
        values[k] = field.from_db_value(values[k], None, connection)
    return Message.from_db(connection.alias, None, values), row[-1]


@transaction.atomic
def message_engagement_record(
    *,
    message: Message | None = None,
    message_id: int | None = None,
    kind: str,
    provider: str,
    event_id: str,
    occurred_at: dt.datetime | None = None,
    payload: dict | None = None,
) -> bool:
    """An open, click or reply of a message: stored once, status moved forward, signalled.

    Every distinct event is signalled (a second click is engagement too); the status
    only moves forward. Give the message or, when the caller has not read it (the open
    pixel), its id: Message.DoesNotExist if there is no such message."""
    occurred_at = occurred_at or timezone.now()
    locked, new = _message_lock_and_store(
        message_id=message.pk if message is not None else message_id,
        provider=provider,
        event_id=event_id,
        kind=kind,
        occurred_at=occurred_at,
        payload=payload,
    )
    if not new:
        return False
    if locked.status in (MessageStatus.SUPPRESSED, MessageStatus.CANCELLED):
        return False
    _apply(locked, kind, "", occurred_at)
    if locked.channel == Channel.EMAIL and locked.lead_id and kind in ("opened", "clicked"):
        activity_record(
            tenant_id=locked.tenant_id,
            lead_id=locked.lead_id,
            kind=ActivityKind.EMAIL_OPEN if kind == "opened" else ActivityKind.EMAIL_CLICK,
            occurred_at=occurred_at,
            source_event_id=f"notifications:{provider}:{event_id}"[:200],
            payload={
                "message_id": locked.pk,
                **({"url": payload.get("url")} if payload and payload.get("url") else {}),
            },
        )
    _engage(locked, kind, occurred_at)
    return True


@transaction.atomic
def message_provider_status_record(
    *,
    tenant: Tenant,
    provider: str,
    event_id: str,
    new_status: str | None,
    message: Message | None = None,
    provider_message_id: str = "",
    reason: str = "",
    occurred_at: dt.datetime | None = None,
    payload: dict | None = None,
) -> Message | None:
    """A delivery report from a provider. Duplicates and backwards moves are ignored.

    The message is found by our id (carried in the callback URL) or by the provider's id."""
    if message is None and provider_message_id:
        message = Message.objects.filter(
            tenant=tenant, provider=provider, provider_message_id=provider_message_id
        ).first()
    if message is None:
        event_store(
            tenant_id=tenant.pk,
            provider=provider,
            event_id=event_id,
            kind="status",
            status=new_status or "",
            payload=payload,
        )
        return None
    locked = Message.objects.select_for_update().get(pk=message.pk)
    if not event_store(
        tenant_id=tenant.pk,
        provider=provider,
        event_id=event_id,
        kind=MessageEventKind.STATUS,
        status=new_status or "",
        message=locked,
        occurred_at=occurred_at,
        payload=payload,
    ):
        return locked
    if provider_message_id and not locked.provider_message_id:
        locked.provider_message_id = provider_message_id
        locked.save(update_fields=["provider_message_id", "updated_at"])
    if new_status is None:
        return locked
    if new_status in (MessageStatus.OPENED, MessageStatus.CLICKED):
        if _apply(locked, new_status, reason, occurred_at):
            _engage(locked, new_status, occurred_at or timezone.now())
        return locked
    moved = _apply(locked, new_status, reason, occurred_at)
    if moved and new_status in (MessageStatus.FAILED, MessageStatus.BOUNCED):
        # Undelivered after all: the caller's fallback channel takes over.
        message_fallback_create(message=locked, why=reason or f"provider reported {new_status}")
    return locked


def twilio_status_callback_record(
    *, tenant: Tenant, params: dict, message_id: str | None
) -> Message | None:
    """Twilio's status callback (form fields MessageSid, MessageStatus, ErrorCode)."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    raw_status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    error_code = params.get("ErrorCode") or ""
    message = None
    if message_id and str(message_id).isdigit():
        message = Message.objects.filter(tenant=tenant, pk=int(message_id)).first()
    with transaction.atomic():
        result = message_provider_status_record(
            tenant=tenant,
            provider="twilio",
            event_id=f"{sid}:{raw_status}:{error_code}",
            new_status=TWILIO_STATUS_MAP.get(raw_status),
            message=message,
            provider_message_id=sid,
            reason=f"twilio {raw_status}" + (f" (error {error_code})" if error_code else ""),
            payload=dict(params),
        )
        if (
            result is not None
            and error_code.isdigit()
            and int(error_code) in OPT_OUT_ERRORS
            and result.to_address
        ):
            suppression_add(
                tenant=tenant,
                channel=Channel.SMS,
                address=result.to_address,
                lead=result.lead,
                reason=SuppressionReason.PROVIDER_OPT_OUT,
                source=f"twilio:{sid}",
            )
    return result


@dataclass
class InboundResult:
    lead: Lead | None
    keyword: str  # "stop", "start", "help" or ""
    reply_text: str  # what to answer (HELP, confirmations); "" for nothing
    duplicate: bool = False


@transaction.atomic
def sms_inbound_record(
    *,
    tenant: Tenant,
    from_phone: str,
    body: str,
    provider: str,
    event_id: str,
    occurred_at: dt.datetime | None = None,
    lead: Lead | None = None,
    activity_event_id: str | None = None,
) -> InboundResult:
    """An SMS from a person: opt-out/opt-in/help keywords, a LeadActivity, a reply."""
    occurred_at = occurred_at or timezone.now()
    if lead is None:
        lead = Lead.objects.filter(tenant=tenant, phone=from_phone).order_by("-updated_at").first()
    phone = from_phone or (lead.phone if lead else "")
    word = " ".join((body or "").split()).upper()
    keyword = (
        "stop"
        if word in OPT_OUT_KEYWORDS
        else "start"
        if word in OPT_IN_KEYWORDS
        else "help"
        if word in HELP_KEYWORDS
        else ""
    )
    if not event_store(
        tenant_id=tenant.pk,
        provider=provider,
        event_id=f"inbound:{event_id}",
        kind=MessageEventKind.OPT_OUT
        if keyword == "stop"
        else MessageEventKind.OPT_IN
        if keyword == "start"
        else MessageEventKind.INBOUND,
        status=keyword,
        occurred_at=occurred_at,
        payload={"from": phone, "body": body[:1600]},
    ):
        return InboundResult(lead=lead, keyword=keyword, reply_text="", duplicate=True)
    reply = ""
    if keyword == "stop" and phone:
        suppression_add(
            tenant=tenant,
            channel=Channel.SMS,
            address=phone,
            lead=lead,
            reason=SuppressionReason.OPT_OUT_KEYWORD,
            note=f"replied {word}",
            source=f"{provider}:{event_id}",
        )
    elif keyword == "start" and phone:
        suppression_lift(
            tenant=tenant, channel=Channel.SMS, address=phone, reason=f"replied {word}"
        )
        reply = settings.NOTIFICATIONS_SMS_START_TEXT.format(tenant=tenant.name)
    elif keyword == "help":
        reply = settings.NOTIFICATIONS_SMS_HELP_TEXT.format(tenant=tenant.name)
    if lead is not None:
        activity_record(
            tenant_id=tenant.id,
            lead_id=lead.pk,
            kind=ActivityKind.SMS_INBOUND,
            occurred_at=occurred_at,
            source_event_id=(activity_event_id or f"{provider}:{event_id}")[:200],
            payload={"body": body[:1600], "keyword": keyword},
        )
        if not keyword:
            _reply_mark(
                tenant=tenant,
                lead=lead,
                channel=Channel.SMS,
                provider=provider,
                event_id=event_id,
                occurred_at=occurred_at,
            )
    return InboundResult(lead=lead, keyword=keyword, reply_text=reply)


def _reply_mark(*, tenant, lead, channel, provider, event_id, occurred_at) -> Message | None:
    """Mark our latest message to this lead on this channel as replied."""
    last = (
        Message.objects.filter(
            tenant=tenant,
            lead=lead,
            channel=channel,
            sent_at__isnull=False,
            sent_at__gte=occurred_at - REPLY_WINDOW,
            sent_at__lte=occurred_at + dt.timedelta(minutes=5),
        )
        .order_by("-sent_at")
        .first()
    )
    if last is None:
        return None
    message_engagement_record(
        message=last,
        kind="replied",
        provider=provider,
        event_id=f"reply:{event_id}",
        occurred_at=occurred_at,
    )
    return last


def _parse_ghl_time(value) -> dt.datetime | None:
    if not value:
        return None
    parsed = parse_datetime(str(value))
    if parsed is None:
        return None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)


GHL_STATUS_MAP = {
    "pending": None,
    "scheduled": None,
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "opened": "opened",
    "clicked": "clicked",
    "failed": "failed",
    "undelivered": "failed",
    "bounced": "bounced",
}


@transaction.atomic
def ghl_message_event_record(*, tenant: Tenant, payload: dict) -> str:
    """A GHL InboundMessage/OutboundMessage webhook: delivery status of our messages,
    replies (LeadActivity + replied) and STOP keywords. Returns what was done."""
    kind = payload.get("type") or ""
    direction = (payload.get("direction") or "").lower()
    message_type = (payload.get("messageType") or "").upper()
    # The messageId is also the activity's source event id on churnapp's side, so the
    # reply recorded there and here is one activity.
    event_id = str(payload.get("messageId") or payload.get("webhookId") or "")
    occurred_at = _parse_ghl_time(payload.get("dateAdded")) or timezone.now()
    # Published examples contradict each other: trust `direction` when present.
    inbound = direction == "inbound" or (not direction and kind == "InboundMessage")
    if not event_id:
        return "ignored: no message id"
    if not inbound:
        status = (payload.get("status") or "").lower()
        result = message_provider_status_record(
            tenant=tenant,
            provider="ghl",
            event_id=f"{payload.get('messageId')}:{status}",
            new_status=GHL_STATUS_MAP.get(status),
            provider_message_id=str(payload.get("messageId") or ""),
            reason=f"ghl {status}",
            occurred_at=occurred_at,
            payload=payload,
        )
        return "status" if result else "ignored: unknown message"
    lead = Lead.objects.filter(tenant=tenant, external_id=payload.get("contactId") or "").first()
    if message_type in ("SMS", "TYPE_SMS"):
        result = sms_inbound_record(
            tenant=tenant,
            from_phone=lead.phone if lead else "",
            body=payload.get("body") or "",
            provider="ghl",
            event_id=event_id,
            occurred_at=occurred_at,
            lead=lead,
            activity_event_id=event_id,
        )
        return f"inbound sms{': ' + result.keyword if result.keyword else ''}"
    if message_type in ("EMAIL", "TYPE_EMAIL") and lead is not None:
        if not event_store(
            tenant_id=tenant.pk,
            provider="ghl",
            event_id=f"inbound:{event_id}",
            kind="inbound",
            occurred_at=occurred_at,
            payload=payload,
        ):
            return "duplicate"
        activity_record(
            tenant_id=tenant.id,
            lead_id=lead.pk,
            kind=ActivityKind.EMAIL_REPLY,
            occurred_at=occurred_at,
            source_event_id=event_id[:200],
            payload={
                "subject": payload.get("subject", ""),
                "body": (payload.get("body") or "")[:2000],
            },
        )
        _reply_mark(
            tenant=tenant,
            lead=lead,
            channel=Channel.EMAIL,
            provider="ghl",
            event_id=event_id,
            occurred_at=occurred_at,
        )
        return "inbound email"
    return "ignored"


ANYMAIL_STATUS_MAP = {
    "queued": None,
    "sent": "sent",
    "deferred": None,
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "bounced": "bounced",
    "rejected": "failed",
    "failed": "failed",
    "complained": None,
    "unsubscribed": None,
}


def anymail_tracking_record(*, event, esp_name: str) -> Message | None:
    """An anymail tracking event (normalized across ESPs) for one of our emails."""
    metadata = event.metadata or {}
    message = None
    our_id = metadata.get("notification_message_id")
    if our_id and str(our_id).isdigit():
        message = Message.objects.filter(pk=int(our_id), channel=Channel.EMAIL).first()
    if message is None and event.message_id:
        message = Message.objects.filter(
            channel=Channel.EMAIL, provider_message_id=str(event.message_id)
        ).first()
    if message is None:
        logger.info(
            "anymail %s event for an unknown message %s", event.event_type, event.message_id
        )
        return None
    tenant = message.tenant
    occurred_at = event.timestamp or timezone.now()
    event_id = str(
        event.event_id or f"{event.message_id}:{event.event_type}:{occurred_at.isoformat()}"
    )
    provider = f"anymail:{esp_name}".lower()[:32]
    with transaction.atomic():
        if event.event_type in ("opened", "clicked"):
            message_engagement_record(
                message=message,
                kind=event.event_type,
                provider=provider,
                event_id=event_id,
                occurred_at=occurred_at,
                payload={"url": event.click_url} if event.click_url else {},
            )
            return message
        message_provider_status_record(
            tenant=tenant,
            provider=provider,
            event_id=event_id,
            new_status=ANYMAIL_STATUS_MAP.get(event.event_type),
            message=message,
            reason=f"{esp_name} {event.event_type}: {event.description or event.reject_reason or ''}".strip(),
            occurred_at=occurred_at,
        )
        reason = {
            "bounced": SuppressionReason.BOUNCE,
            "complained": SuppressionReason.COMPLAINT,
            "unsubscribed": SuppressionReason.UNSUBSCRIBE,
        }.get(event.event_type)
        # Only hard bounces suppress; a soft bounce may succeed next time.
        if reason == SuppressionReason.BOUNCE and event.reject_reason not in (
            None,
            "bounced",
            "invalid",
        ):
            reason = None
        if reason and message.to_address:
            suppression_add(
                tenant=tenant,
                channel=Channel.EMAIL,
                address=message.to_address,
                lead=message.lead,
                reason=reason,
                source=f"{provider}:{event_id}",
            )
    return message


@transaction.atomic
def email_unsubscribe_record(*, message: Message) -> bool:
    """The unsubscribe link (or List-Unsubscribe one-click) of one of our emails."""
    address = message.to_address or (message.lead.email if message.lead else "")
    if not address:
        return False
    _, created = suppression_add(
        tenant=message.tenant,
        channel=Channel.EMAIL,
        address=address,
        lead=message.lead,
        reason=SuppressionReason.UNSUBSCRIBE,
        source=f"unsubscribe:{message.pk}",
    )
    return created
