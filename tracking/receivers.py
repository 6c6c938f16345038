"""Receivers of the lower apps' signals: each appends lifecycle events in the sender's transaction."""

from __future__ import annotations

from tracking.events import tracking_event_record, tracking_events_record
from tracking.models import EventKind

_INTERVENTION_KINDS = {
    "started": EventKind.INTERVENTION_STARTED,
    "activated": EventKind.INTERVENTION_ACTIVATED,
    "engaged": EventKind.INTERVENTION_ENGAGED,
    "resolved": EventKind.OUTCOME_RECORDED,
    "step_skipped": EventKind.STEP_SKIPPED,
    "escalated": EventKind.ESCALATED,
}
_ESCALATION_KINDS = {
    "opened": EventKind.ESCALATED,
    "acknowledged": EventKind.ESCALATION_ACKNOWLEDGED,
    "resolved": EventKind.ESCALATION_RESOLVED,
    "sla_breached": EventKind.ESCALATION_SLA_BREACHED,
}
# Opens, clicks and replies arrive as message_engaged (every distinct one); the status
# move that accompanies the first of them would only duplicate it.
_ENGAGED_STATUSES = frozenset({"opened", "clicked", "replied"})
_VALID_KINDS = frozenset(EventKind.values)


def on_intervention_changed(
    sender,
    *,
    tenant_id,
    intervention_id,
    lead_id,
    stage,
    episode,
    is_holdout,
    event,
    previous_status="",
    new_status="",
    outcome="",
    detail=None,
    **kwargs,
) -> None:
    kind = _INTERVENTION_KINDS.get(event)
    if kind is None:
        return
    detail = dict(detail or {})
    tracking_event_record(
        tenant_id=tenant_id,
        kind=kind,
        lead_id=lead_id,
        intervention_id=intervention_id,
        stage=stage,
        channel=detail.get("channel") or "",
        data={
            "episode": episode,
            "is_holdout": is_holdout,
            "previous_status": previous_status,
            "new_status": new_status,
            "outcome": outcome,
            **detail,
        },
    )


def on_escalation_changed(
    sender,
    *,
    tenant_id,
    escalation_id,
    intervention_id,
    lead_id,
    manager_id=None,
    event,
    detail=None,
    **kwargs,
) -> None:
    kind = _ESCALATION_KINDS.get(event)
    if kind is None:
        return
    tracking_event_record(
        tenant_id=tenant_id,
        kind=kind,
        lead_id=lead_id,
        intervention_id=intervention_id,
        escalation_id=escalation_id,
        stage=3,
        data={"manager_id": manager_id, **(detail or {})},
    )


def _message_status_event(
    *,
    tenant_id,
    message_id,
    lead_id=None,
    agent_id=None,
    channel="",
    previous_status="",
    new_status,
    reason="",
    metadata=None,
    **kwargs,
) -> dict | None:
    """tracking_event_record's arguments for a message status change, or None when the
    change is not a lifecycle event (an engagement comes through message_engaged)."""
    if new_status in _ENGAGED_STATUSES:
        return None
    kind = f"message_{new_status}"
    if kind not in _VALID_KINDS:
        return None
    metadata = metadata or {}
    return {
        "tenant_id": tenant_id,
        "kind": kind,
        "lead_id": lead_id,
        "intervention_id": metadata.get("intervention_id"),
        "message_id": message_id,
        "channel": channel,
        "data": {
            "previous_status": previous_status,
            "new_status": new_status,
            "reason": reason,
            "agent_id": agent_id,
            "step": metadata.get("step"),
        },
    }


def on_message_status_changed(sender, **kwargs) -> None:
    event = _message_status_event(**kwargs)
    if event is not None:
        tracking_event_record(**event)


def on_message_statuses_changed(sender, *, changes, **kwargs) -> None:
    """A send chunk's status changes: one event each, in one INSERT, in order."""
    tracking_events_record(
        events=[
            event for change in changes if (event := _message_status_event(**change)) is not None
        ]
    )


def on_message_engaged(
    sender, *, tenant_id, message_id, lead_id=None, kind, metadata=None, occurred_at=None, **kw
) -> None:
    event_kind = f"message_{kind}"
    if event_kind not in _VALID_KINDS:
        return
    metadata = metadata or {}
    tracking_event_record(
        tenant_id=tenant_id,
        kind=event_kind,
        lead_id=lead_id,
        intervention_id=metadata.get("intervention_id"),
        message_id=message_id,
        data={"step": metadata.get("step")},
        occurred_at=occurred_at,
    )


def on_recipient_opted_out(sender, *, tenant_id, lead_id=None, channel="", reason="", **kw) -> None:
    tracking_event_record(
        tenant_id=tenant_id,
        kind=EventKind.OPTED_OUT,
        lead_id=lead_id,
        channel=channel or "",
        data={"reason": reason},
    )


def _tier_changed(
    *,
    tenant_id,
    lead_id,
    previous_tier="",
    new_tier="",
    score=None,
    assessment_id=None,
    model_version=None,
    reasons=None,
    **kwargs,
) -> dict | None:
    """The tier_changed event of one assessment, as tracking_event_record's arguments."""
    if previous_tier == new_tier:
        return None
    return {
        "tenant_id": tenant_id,
        "kind": EventKind.TIER_CHANGED,
        "lead_id": lead_id,
        "data": {
            "previous_tier": previous_tier,
            "new_tier": new_tier,
            "score": score,
            "assessment_id": assessment_id,
            "model_version": model_version,
            "reasons": list(reasons or [])[:5],
        },
    }


def on_risk_assessed(sender, *, tenant_id, lead_id, **kwargs) -> None:
    event = _tier_changed(tenant_id=tenant_id, lead_id=lead_id, **kwargs)
    if event is not None:
        tracking_event_record(**event)


def on_risk_assessed_many(sender, *, tenant_id, changes, **kwargs) -> None:
    """Scoring's tier changes of one write: one event each, in one INSERT, in order."""
    tracking_events_record(
        events=[
            event
            for change in changes
            if (event := _tier_changed(tenant_id=tenant_id, **change)) is not None
        ]
    )


def on_message_saved(sender, *, instance, created=False, raw=False, **kwargs) -> None:
    """A new outbox row is a queued message (notifications signals status changes only)."""
    if not created or raw:
        return
    metadata = instance.metadata or {}
    tracking_event_record(
        tenant_id=instance.tenant_id,
        kind=f"message_{instance.status}"
        if f"message_{instance.status}" in _VALID_KINDS
        else EventKind.MESSAGE_QUEUED,
        lead_id=instance.lead_id,
        intervention_id=metadata.get("intervention_id"),
        message_id=instance.pk,
        channel=instance.channel,
        data={
            "new_status": instance.status,
            "agent_id": instance.agent_id,
            "step": metadata.get("step"),
            "variant": instance.variant,
            "fallback_of": instance.fallback_of_id,
        },
    )
