"""Signals churnapp sends upward. Receivers run inside the sender's transaction."""

from django.dispatch import Signal

# New activity was stored. kwargs: tenant_id: int, lead_ids: list[int],
# activity_ids: list[int], inbound_lead_ids: list[int] (leads that did something),
# kinds: frozenset[str] (the kinds among the stored activities: a receiver that acts on
# a few kinds can skip a batch without reading it back).
activity_ingested = Signal()

# A CRM message event (GHL InboundMessage/OutboundMessage) was verified and applied to
# the lead's activity. kwargs: tenant_id: int, event_type: str, payload: dict (the
# event as GHL sent it), lead_id: int. notifications listens for delivery status,
# replies and STOP keywords: one signed front door serves every app.
crm_message_received = Signal()

# A lead's risk tier changed. Sent inside the scoring transaction (receivers' writes
# join it), once per RiskAssessment row of kind "tier_change". kwargs: tenant_id: int,
# lead_id: int, assessment_id: int, previous_tier: str, new_tier: str, score: float,
# model_version: str, reasons: list[dict] ({"factor", "text", "impact"}, top three).
risk_assessed = Signal()
