"""Handlers of churnapp's and notifications' signals; they run in the sender's transaction."""

from __future__ import annotations

from interventions.services.orchestration import (
    ACTIVITY_KINDS_ACTED_ON,
    intervention_on_message,
    intervention_on_opt_out,
    intervention_on_risk,
    interventions_on_activity,
    interventions_on_risk,
)
from notifications.models import MessageStatus


def on_risk_assessed(
    sender,
    *,
    tenant_id,
    lead_id,
    previous_tier,
    new_tier,
    score=None,
    assessment_id=None,
    reasons=None,
    assessed_at=None,
    **kwargs,
) -> None:
    intervention_on_risk(
        tenant_id=tenant_id,
        lead_id=lead_id,
        previous_tier=previous_tier,
        new_tier=new_tier,
        score=score,
        assessment_id=assessment_id,
        reasons=reasons,
        assessed_at=assessed_at,
    )


def on_risk_assessed_many(sender, *, tenant_id, changes, **kwargs) -> None:
    # A scoring chunk's tier changes, planned together (one lock, bulk writes).
    interventions_on_risk(tenant_id=tenant_id, changes=changes)


def on_activity_ingested(
    sender, *, tenant_id, activity_ids, lead_ids=(), kinds=None, **kwargs
) -> None:
    # Every batch, not only those with inbound activity: an opportunity won or lost has
    # no direction and must end the open intervention all the same. A batch of no kind
    # that moves an intervention (an email open: that engages it through
    # message_engaged) is skipped without a query.
    if kinds is not None and kinds.isdisjoint(ACTIVITY_KINDS_ACTED_ON):
        return
    interventions_on_activity(tenant_id=tenant_id, activity_ids=activity_ids, lead_ids=lead_ids)


def on_message_status_changed(sender, *, new_status, metadata=None, **kwargs) -> None:
    intervention_id = (metadata or {}).get("intervention_id")
    # Only a send moves an intervention on a status alone (it activates it); engagement
    # comes through message_engaged. Other statuses would lock the intervention for nothing.
    if intervention_id and new_status in (MessageStatus.SENT, MessageStatus.DELIVERED):
        intervention_on_message(intervention_id=intervention_id, new_status=new_status)


def on_message_statuses_changed(sender, *, changes, **kwargs) -> None:
    for change in changes:
        on_message_status_changed(sender, **change)


def on_message_engaged(sender, *, kind, metadata=None, **kwargs) -> None:
    intervention_id = (metadata or {}).get("intervention_id")
    if intervention_id:
        intervention_on_message(intervention_id=intervention_id, new_status="", engagement=kind)


def on_recipient_opted_out(sender, *, tenant_id, lead_id, channel, **kwargs) -> None:
    if lead_id:
        intervention_on_opt_out(tenant_id=tenant_id, lead_id=lead_id, channel=channel)
