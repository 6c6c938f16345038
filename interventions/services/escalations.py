"""Manager escalations: open with an SLA in business hours, alert, acknowledge, resolve."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from churnapp.exceptions import ConflictError
from churnapp.models import Agent, AgentRole
from interventions.clock import add_business_hours, zone
from interventions.models import Escalation, EscalationRule, EscalationStatus, Intervention
from interventions.signals import escalation_changed
from notifications.services import message_request


def _emit(escalation: Escalation, event: str, **detail) -> None:
    escalation_changed.send(
        sender=Escalation,
        tenant_id=escalation.tenant_id,
        escalation_id=escalation.id,
        intervention_id=escalation.intervention_id,
        lead_id=escalation.lead_id,
        manager_id=escalation.manager_id,
        event=event,
        detail=detail,
    )


def escalation_manager_pick(*, intervention: Intervention) -> Agent | None:
    """The lead's agent's manager when the rule says so and one is set; otherwise round
    robin: the active manager whose last escalation is oldest (never-assigned first)."""
    policy = intervention.policy
    agent = intervention.lead.assigned_agent
    if policy.escalation_rule == EscalationRule.AGENT_MANAGER and agent is not None:
        manager = getattr(agent, "manager", None)
        if manager is not None and manager.is_active:
            return manager
    return (
        Agent.objects.filter(
            tenant_id=intervention.tenant_id, role=AgentRole.MANAGER, is_active=True
        )
        .annotate(last=Max("escalations__opened_at"), n=Count("escalations"))
        .order_by(F("last").asc(nulls_first=True), "n", "id")
        .first()
    )


def _alert_manager(escalation: Escalation, kind: str) -> None:
    if escalation.manager is None:
        return
    message_request(
        tenant=escalation.tenant,
        channel="agent_alert",
        lead=escalation.lead,
        agent=escalation.manager,
        template_key=f"escalation_{kind}",
        variant="A",
        context={
            "escalation_id": escalation.id,
            "sla_due_at": escalation.sla_due_at.isoformat(),
            "stage": escalation.intervention.stage,
        },
        idempotency_key=f"esc:{escalation.id}:{kind}",
        metadata={"intervention_id": escalation.intervention_id, "escalation_id": escalation.id},
    )


def escalation_open(*, intervention: Intervention, now: dt.datetime | None = None) -> Escalation:
    """Open the escalation of a stage-3 intervention (once) and alert its manager now."""
    now = now or timezone.now()
    existing = Escalation.objects.filter(intervention=intervention).first()
    if existing is not None:
        return existing
    policy = intervention.policy
    tenant = intervention.lead.tenant
    escalation = Escalation.objects.create(
        tenant_id=intervention.tenant_id,
        intervention=intervention,
        lead_id=intervention.lead_id,
        manager=escalation_manager_pick(intervention=intervention),
        sla_due_at=add_business_hours(
            now,
            policy.escalation_sla_business_hours,
            zone(tenant.timezone),
            policy.business_day_start,
            policy.business_day_end,
        ),
    )
    _emit(escalation, "opened", sla_due_at=escalation.sla_due_at.isoformat())
    if not intervention.is_holdout:
        _alert_manager(escalation, "opened")
    return escalation


@transaction.atomic
def escalation_acknowledge(
    *, escalation: Escalation, by: Agent | None = None, note: str = ""
) -> Escalation:
    locked = Escalation.objects.select_for_update().get(pk=escalation.pk)
    if locked.status != EscalationStatus.OPEN:
        raise ConflictError(f"The escalation is already {locked.status}.")
    locked.status = EscalationStatus.ACKNOWLEDGED
    locked.acknowledged_at = timezone.now()
    if by is not None and locked.manager_id is None:
        locked.manager = by
    if note:
        locked.notes = f"{locked.notes}\n{note}".strip()
    locked.save(update_fields=["status", "acknowledged_at", "manager", "notes"])
    _emit(locked, "acknowledged", by=getattr(by, "id", None))
    return locked


@transaction.atomic
def escalation_resolve(
    *, escalation: Escalation, by: Agent | None = None, note: str = ""
) -> Escalation:
    locked = Escalation.objects.select_for_update().get(pk=escalation.pk)
    if locked.status == EscalationStatus.RESOLVED:
        raise ConflictError("The escalation is already resolved.")
    now = timezone.now()
    if locked.acknowledged_at is None:
        locked.acknowledged_at = now
    locked.status = EscalationStatus.RESOLVED
    locked.resolved_at = now
    if note:
        locked.notes = f"{locked.notes}\n{note}".strip()
    locked.save(update_fields=["status", "acknowledged_at", "resolved_at", "notes"])
    _emit(locked, "resolved", by=getattr(by, "id", None))
    return locked


def escalation_close_on_outcome(*, escalation: Escalation, outcome: str, now: dt.datetime) -> None:
    """The lead came back on its own: the escalation is resolved, saying why."""
    if escalation.status == EscalationStatus.RESOLVED:
        return
    escalation.status = EscalationStatus.RESOLVED
    escalation.resolved_at = now
    escalation.notes = f"{escalation.notes}\nclosed: lead {outcome}".strip()
    escalation.save(update_fields=["status", "resolved_at", "notes"])
    _emit(escalation, "resolved", outcome=outcome)


def escalations_check_sla(*, now: dt.datetime | None = None) -> int:
    """Mark open escalations past their SLA as breached, once, and alert the manager again."""
    now = now or timezone.now()
    count = 0
    with transaction.atomic():
        due = (
            Escalation.objects.select_for_update(skip_locked=True, of=("self",), no_key=True)
            .select_related("tenant", "lead", "intervention", "manager")
            .filter(Q(status=EscalationStatus.OPEN), sla_due_at__lt=now, breached_at__isnull=True)
            .order_by("sla_due_at", "id")[:500]
        )
        for escalation in due:
            escalation.breached_at = now
            escalation.save(update_fields=["breached_at"])
            _emit(escalation, "sla_breached", sla_due_at=escalation.sla_due_at.isoformat())
            if not escalation.intervention.is_holdout:
                _alert_manager(escalation, "breached")
            count += 1
    return count
