"""Signals churnapp sends upward. Receivers run inside the sender's transaction."""

from django.dispatch import Signal

# New activity was stored. kwargs: tenant_id: int, lead_ids: list[int],
# activity_ids: list[int], inbound_lead_ids: list[int] (leads that did something).
activity_ingested = Signal()

# A CRM message event (GHL InboundMessage/OutboundMessage) was verified and applied to
# the lead's activity. kwargs: tenant_id: int, event_type: str, payload: dict (the
# event as GHL sent it), lead_id: int. notifications listens for delivery status,
# replies and STOP keywords: one signed front door serves every app.
crm_message_received = Signal()

# A lead's risk tier changed. kwargs: tenant_id, lead_id, assessment_id, previous_tier,
# new_tier, score, model_version, reasons (list of {"factor", "text", "impact"}).
risk_assessed = Signal()
