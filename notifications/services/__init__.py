"""The notifications services other apps call (interventions above all).

Contracts
---------
message_request(*, tenant, channel, lead=None, agent=None, template_key: str,
                variant: str = "A", context: dict, idempotency_key: str,
                fallback_channels: Sequence[str] = (), not_before: datetime | None = None,
                metadata: dict | None = None, enqueue: bool = True) -> Message
    Renders the tenant's active template (channel, template_key, variant; falls back to
    variant "A"), stores the Message in the caller's transaction and enqueues its send
    with transaction.on_commit (with enqueue=False the caller hands it to
    messages_dispatch after commit instead). A repeated idempotency_key returns the
    existing row and does nothing else. `not_before` schedules the send (task countdown, and the sweeper
    for anything further away than the backoff ceiling). `metadata` is opaque JSON,
    copied to fallbacks and companions and passed back in every signal.
    Raises churnapp.exceptions.ApplicationError (code template_missing,
    template_context, invalid_channel, no_recipient, tenant_mismatch).
    channel "agent_alert" (agent required) also creates a companion SMS (agent.phone) or
    email Message to the agent (ChannelConfig(agent_alert).options["companion"] =
    "auto"|"sms"|"email"|"none"), linked by Message.parent.
    channel "ghl_task" needs a lead (the GHL contact); the agent defaults to the lead's
    assigned agent. "ghl_workflow" needs a lead and a workflow id mapped to the
    template_key in ChannelConfig(ghl_workflow).options["workflows"].

template_save(*, tenant, channel, key, body_text, variant="A", subject="", body_html="",
              sample_context=None, is_active=True) -> Template
    Creates or updates a template; renders it against a sample context first
    (lead, agent, tenant, risk_reasons, risk_tier, risk_score, unsubscribe_url, plus
    sample_context) and raises ValidationError on unknown variables or bad syntax.

MessageBatch(*, tenant)  .prefetch(idempotency_keys=) .request(**message_request's
    arguments but tenant, fallback_of and enqueue) -> Message  .write() -> list[Message]
    .announce(message)
    Many messages requested in one transaction (a scoring chunk's interventions): each
    request answers as message_request would (the existing row of a known key, a new
    unsaved row, or the same ApplicationError); write() inserts the new rows in one
    statement, settling the first-SMS opt-out text as one by one; announce() does for a
    new row what its creation does one by one (post_save: the "queued" lifecycle event;
    an agent alert's companion). Nothing is enqueued: hand the rows to messages_dispatch
    after commit. The caller must own its keys (hold the lead locks).

sending.messages_dispatch(*, message_ids, send_here: int = 0) -> int
    After commit, outside any transaction: sends up to `send_here` messages right here
    (the single send: claim, call, settle; what cannot finish goes on by its send task),
    or publishes them all as batch tasks (messages_enqueue) when there are more.

message_cancel(*, message, reason="cancelled by caller") -> Message
    Cancels a queued (not yet sent) message; ConflictError otherwise.
message_withdraw(*, message, reason="cancelled by caller") -> bool
    Cancels the message if it is still queued (checked under its lock); False when a
    send worker has claimed it, which then goes on. For callers giving up on a message.

Fallback: a message that fails permanently, ends dead, is suppressed, or is later
reported failed/bounced by its provider starts the next
of its fallback_channels as a new Message (idempotency key f"{key}:fb:{channel}",
fallback_of=the first, same metadata and context); status_reason records why.

Signals (notifications.signals), sent inside the transaction that changes the row:
    message_status_changed(tenant_id, message_id, lead_id, agent_id, channel,
                           previous_status, new_status, reason, metadata)
    message_statuses_changed(changes): the changes of many rows written by one statement
                    (message_status_set_many: a send chunk), each a dict of the
                    arguments above, in order; they are not sent one by one as well.
    message_engaged(tenant_id, message_id, lead_id, kind, metadata, occurred_at),
                    kind in {"opened", "clicked", "replied"}
    recipient_opted_out(tenant_id, lead_id, channel, reason)

Provider events that arrive elsewhere (e.g. churnapp's GHL webhook inbox) can be fed in
with callbacks.ghl_message_event_record(tenant=, payload=) and
callbacks.sms_inbound_record(...); status reports with
callbacks.message_provider_status_record(...).
"""

from notifications.services.messages import (
    MessageBatch,
    message_cancel,
    message_request,
    message_status_record,
    message_withdraw,
)
from notifications.services.suppression import suppression_add, suppression_lift
from notifications.services.templates import template_save

__all__ = [
    "MessageBatch",
    "message_cancel",
    "message_withdraw",
    "message_request",
    "message_status_record",
    "suppression_add",
    "suppression_lift",
    "template_save",
]
