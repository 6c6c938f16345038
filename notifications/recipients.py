"""Where a message goes: the recipient's address on a channel, and public URLs of ours."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from churnapp.models import Agent, Lead


def recipient_address(*, channel: str, lead: Lead | None, agent: Agent | None) -> str:
    """The address a suppression is keyed on: phone (E.164), lower-case email, or an id."""
    person = lead if lead is not None else agent
    if person is None:
        return ""
    if channel == "sms":
        return (person.phone or "").strip()
    if channel == "email":
        return (person.email or "").strip().lower()
    if channel == "ghl_task" and lead is not None:
        return f"lead:{lead.pk}"
    return f"{'lead' if lead is not None else 'agent'}:{person.pk}"


def public_url(path: str) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def public_reverse(name: str, **kwargs) -> str:
    return public_url(reverse(name, kwargs=kwargs))
