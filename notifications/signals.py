"""The signals notifications sends upward; sent inside the transaction that changes the row.

- message_status_changed(tenant_id, message_id, lead_id, agent_id, channel,
  previous_status, new_status, reason, metadata)
- message_statuses_changed(changes): many rows' changes written by one statement (a
  send batch's chunk), each change a dict of message_status_changed's arguments, in
  order. Such changes are told only here, not one by one: a receiver of
  message_status_changed listens to this one too.
- message_engaged(tenant_id, message_id, lead_id, kind, metadata, occurred_at),
  kind in {"opened", "clicked", "replied"}
- recipient_opted_out(tenant_id, lead_id, channel, reason)
"""

from django.dispatch import Signal

message_status_changed = Signal()
message_statuses_changed = Signal()
message_engaged = Signal()
recipient_opted_out = Signal()
