"""Signals churnapp sends upward. Receivers run inside the sender's transaction."""

from django.dispatch import Signal

# New activity was stored. kwargs: tenant_id: int, lead_ids: list[int],
# activity_ids: list[int], inbound_lead_ids: list[int] (leads that did something).
activity_ingested = Signal()
