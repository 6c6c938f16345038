"""Signals interventions sends upward (to tracking). Sent inside the changing transaction."""

from django.dispatch import Signal

# An intervention changed. kwargs: tenant_id, intervention_id, lead_id, stage, episode,
# is_holdout, event (started, activated, engaged, resolved, step_skipped, escalated),
# previous_status, new_status, outcome, detail (dict).
intervention_changed = Signal()

# An escalation changed. kwargs: tenant_id, escalation_id, intervention_id, lead_id,
# manager_id, event (opened, acknowledged, resolved, sla_breached), detail (dict).
escalation_changed = Signal()
