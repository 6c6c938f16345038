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

# A lead's risk tier changed. kwargs: tenant_id: int, lead_id: int, assessment_id: int,
# previous_tier: str, new_tier: str, score: float, model_version: str, reasons:
# list[dict] ({"factor", "text", "impact"}, top three). Scoring itself announces its
# tier changes with `risk_assessed_many` (below); this one is for a single change told
# by anything else (the simulator's stand-in scorer, tests, tools).
risk_assessed = Signal()

# Several leads' risk tiers changed in one scoring write (a batch chunk, or a real-time
# rescore of a few leads). Sent once per write, inside its transaction (receivers'
# writes join it), for the RiskAssessment rows of kind "tier_change" it inserted.
# kwargs: tenant_id: int, changes: list[dict], in lead id order, each holding what
# risk_assessed carries (lead_id, assessment_id, previous_tier, new_tier, score,
# model_version, reasons). A receiver must act on the list as it would on one
# risk_assessed per item in that order; one signal lets it do so set-based (one lock of
# the leads, one read of their interventions, bulk inserts) instead of once per lead.
risk_assessed_many = Signal()
