"""The per-tenant, per-channel suppression list: add, lift, and the check made at send time."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from churnapp.models import Lead, Tenant
from notifications.models import Channel, Message, Suppression, SuppressionReason
from notifications.recipients import recipient_address
from notifications.signals import recipient_opted_out

# GHL's dndSettings keys, lower-cased, for our channels.
_DND_KEYS = {Channel.SMS: {"sms"}, Channel.EMAIL: {"email"}}
# Reasons that mean the person asked us to stop (the apps above must hear of it).
OPT_OUT_REASONS = {
    SuppressionReason.OPT_OUT_KEYWORD,
    SuppressionReason.UNSUBSCRIBE,
    SuppressionReason.COMPLAINT,
    SuppressionReason.PROVIDER_OPT_OUT,
}


def _normalize(channel: str, address: str) -> str:
    address = (address or "").strip()
    return address.lower() if channel == Channel.EMAIL else address


@transaction.atomic
def suppression_add(
    *,
    tenant: Tenant,
    channel: str,
    address: str,
    reason: str,
    lead: Lead | None = None,
    note: str = "",
    source: str = "",
) -> tuple[Suppression, bool]:
    """Suppress an address on a channel. Idempotent: an active entry is returned as is."""
    address = _normalize(channel, address)
    if not address:
        raise ValueError("a suppression needs an address")
    existing = Suppression.objects.filter(
        tenant=tenant, channel=channel, address=address, lifted_at__isnull=True
    ).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            entry = Suppression.objects.create(
                tenant=tenant,
                channel=channel,
                address=address,
                reason=reason,
                lead=lead,
                note=note,
                source=source[:255],
            )
    except IntegrityError:
        return (
            Suppression.objects.get(
                tenant=tenant, channel=channel, address=address, lifted_at__isnull=True
            ),
            False,
        )
    if reason in OPT_OUT_REASONS:
        leads = (
            [lead]
            if lead is not None
            else _leads_at(tenant=tenant, channel=channel, address=address)
        )
        for person in leads:
            recipient_opted_out.send(
                sender=Suppression,
                tenant_id=tenant.pk,
                lead_id=person.pk,
                channel=channel,
                reason=reason,
            )
    return entry, True


@transaction.atomic
def suppression_lift(*, tenant: Tenant, channel: str, address: str, reason: str) -> int:
    """Lift the active suppression of an address (e.g. START after STOP)."""
    return Suppression.objects.filter(
        tenant=tenant,
        channel=channel,
        address=_normalize(channel, address),
        lifted_at__isnull=True,
    ).update(lifted_at=timezone.now(), lifted_reason=reason[:255])


def _leads_at(*, tenant: Tenant, channel: str, address: str) -> list[Lead]:
    if channel == Channel.SMS:
        return list(Lead.objects.filter(tenant=tenant, phone=address))
    if channel == Channel.EMAIL:
        return list(Lead.objects.filter(tenant=tenant, email__iexact=address))
    if address.startswith("lead:"):
        return list(Lead.objects.filter(tenant=tenant, pk=address.split(":", 1)[1]))
    return []


def _consent_reason(message: Message) -> str:
    """Why the lead's own settings forbid this message ("" if they do not)."""
    lead, channel = message.lead, message.channel
    if lead is not None and channel in (Channel.SMS, Channel.EMAIL):
        if channel == Channel.SMS and not lead.consent_sms:
            return "no_consent: the lead has no SMS consent"
        if channel == Channel.EMAIL and not lead.consent_email:
            return "no_consent: the lead has no email consent"
        if lead.dnd:
            return "ghl_dnd: do-not-disturb is on for the lead in GHL"
        dnd = {c.lower() for c in lead.dnd_channels or []}
        if dnd & _DND_KEYS[channel]:
            return f"ghl_dnd: GHL do-not-disturb is active for {channel}"
    if lead is not None and channel == Channel.GHL_WORKFLOW and lead.dnd:
        return "ghl_dnd: do-not-disturb is on for the lead in GHL"
    return ""


def _listed_reason(entry: Suppression, *, channel: str, address: str) -> str:
    return f"{entry.reason}: {address} is on the {channel} suppression list" + (
        f" ({entry.note})" if entry.note else ""
    )


def suppression_reason_for(*, message: Message) -> str:
    """Why this message must not go out now ("" if it may). Checked at send time."""
    reason = _consent_reason(message)
    if reason:
        return reason
    channel = message.channel
    address = recipient_address(channel=channel, lead=message.lead, agent=message.agent)
    if not address:
        return ""
    entry = (
        Suppression.objects.filter(
            tenant_id=message.tenant_id,
            channel=channel,
            address=_normalize(channel, address),
            lifted_at__isnull=True,
        )
        .order_by("created_at")
        .first()
    )
    if entry is not None:
        return _listed_reason(entry, channel=channel, address=address)
    return ""


def suppression_reasons_for(*, messages: list[Message]) -> dict[int, str]:
    """suppression_reason_for of many messages of one tenant and channel, with one query
    of the suppression list: {message id: reason} for those that must not go out."""
    reasons: dict[int, str] = {}
    addresses: dict[int, tuple[str, str]] = {}
    for message in messages:
        reason = _consent_reason(message)
        if reason:
            reasons[message.pk] = reason
            continue
        address = recipient_address(channel=message.channel, lead=message.lead, agent=message.agent)
        if address:
            addresses[message.pk] = (address, _normalize(message.channel, address))
    if not addresses:
        return reasons
    keys = {(m.tenant_id, m.channel) for m in messages if m.pk in addresses}
    if len(keys) != 1:
        raise ValueError("suppression_reasons_for takes messages of one tenant and channel")
    ((tenant_id, channel),) = keys
    listed: dict[str, Suppression] = {}
    for entry in Suppression.objects.filter(
        tenant_id=tenant_id,
        channel=channel,
        address__in={normal for _, normal in addresses.values()},
        lifted_at__isnull=True,
    ).order_by("-created_at"):
        listed[entry.address] = entry  # the oldest active entry wins, as above
    for message_id, (address, normal) in addresses.items():
        entry = listed.get(normal)
        if entry is not None:
            reasons[message_id] = _listed_reason(entry, channel=channel, address=address)
    return reasons
