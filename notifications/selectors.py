"""Reads of the notifications app."""

from __future__ import annotations

from django.db.models import QuerySet

from notifications.models import Message, MessageStatus, Suppression


def messages_for_lead(*, tenant, lead) -> QuerySet[Message]:
    return Message.objects.filter(tenant=tenant, lead=lead).order_by("-created_at")


def messages_dead(*, tenant=None) -> QuerySet[Message]:
    qs = Message.objects.filter(status=MessageStatus.DEAD)
    return qs.filter(tenant=tenant) if tenant is not None else qs


def suppressions_active(*, tenant, channel: str | None = None) -> QuerySet[Suppression]:
    qs = Suppression.objects.filter(tenant=tenant, lifted_at__isnull=True)
    return qs.filter(channel=channel) if channel else qs
