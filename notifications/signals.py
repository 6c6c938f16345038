"""The signals notifications sends upward; sent inside the transaction that changes the row.

- message_status_changed(tenant_id, message_id, lead_id, agent_id, channel,
  previous_status, new_status, reason, metadata)
- message_engaged(tenant_id, message_id, lead_id, kind, metadata, occurred_at),
  kind in {"opened", "clicked", "replied"}
- recipient_opted_out(tenant_id, lead_id, channel, reason)
"""

from django.dispatch import Signal

message_status_changed = Signal()
message_engaged = Signal()
recipient_opted_out = Signal()
