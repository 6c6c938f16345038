"""The three-stage orchestration: start or escalate on a tier rise, plan the sends under
the tenant's contact rules, react to engagement, and resolve each stage's outcome."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.models import ActivityKind, Lead, LeadActivity, LeadStatus, RiskTier
from churnapp.services.intervention_history import lead_intervention_record
from interventions.clock import quiet_hours_release, zone
from interventions.models import (
    OPEN_STATUSES,
    SUCCESS_OUTCOMES,
    Intervention,
    InterventionPolicy,
    InterventionStatus,
    InterventionStep,
    Outcome,
    Recipient,
    Stage,
    StagePolicy,
    StepStatus,
)
from interventions.selectors import lead_sends_in_windows
from interventions.services.dispatch import planned_sends_dispatch_on_commit, sends_published
from interventions.services.experiments import cohort_assign, variant_choose, variant_record_result
from interventions.services.policy import policy_ensure, stage_policy_active
from interventions.signals import intervention_changed
from notifications.models import MessageStatus
from notifications.services import message_cancel, message_request
from notifications.services.callbacks import OPT_OUT_KEYWORDS

TIER_STAGE: dict[str, int] = {
    RiskTier.EARLY_WARNING: Stage.EARLY_WARNING,
    RiskTier.ACTIVE_RISK: Stage.ACTIVE_RISK,
    RiskTier.CRITICAL: Stage.CRITICAL,
}

# What counts as the lead coming back. Opens and clicks of our own messages are left
# out on purpose: held-out leads get no messages to open, so counting them would make
# treatment look better than it is. Both arms are judged by the same activity.
REENGAGE_KINDS = frozenset(
    {
        ActivityKind.SMS_INBOUND,
        ActivityKind.EMAIL_REPLY,
        ActivityKind.CALL_INBOUND,
        ActivityKind.FORM_SUBMIT,
        ActivityKind.WEBSITE_VISIT,
        ActivityKind.PROPERTY_VIEW,
    }
)
REPLY_KINDS = frozenset(
    {ActivityKind.SMS_INBOUND, ActivityKind.EMAIL_REPLY, ActivityKind.CALL_INBOUND}
)
CONVERSION_KINDS = frozenset(
    {
        ActivityKind.APPOINTMENT_BOOKED,
        ActivityKind.SHOWING_ATTENDED,
        ActivityKind.OPPORTUNITY_WON,
    }
)
CHURN_KINDS = frozenset({ActivityKind.OPPORTUNITY_LOST})
# What interventions_on_activity acts on; a batch of none of these changes nothing.
ACTIVITY_KINDS_ACTED_ON = REENGAGE_KINDS | REPLY_KINDS | CONVERSION_KINDS | CHURN_KINDS
# The tenant's churn definition at the last stage: silent this long means churned.
CHURN_SILENCE = dt.timedelta(days=30)


def _emit(intervention: Intervention, event: str, previous_status: str, **detail) -> None:
    intervention_changed.send(
        sender=Intervention,
        tenant_id=intervention.tenant_id,
        intervention_id=intervention.id,
        lead_id=intervention.lead_id,
        stage=intervention.stage,
        episode=intervention.episode,
        is_holdout=intervention.is_holdout,
        event=event,
        previous_status=previous_status,
        new_status=intervention.status,
        outcome=intervention.outcome,
        detail=detail,
    )


# No savepoint: it runs inside the scoring transaction (a receiver of risk_assessed),
# and an error here propagates and rolls that whole transaction back anyway.
@transaction.atomic(savepoint=False)
def intervention_on_risk(
    *,
    tenant_id: int,
    lead_id: int,
    previous_tier: str,
    new_tier: str,
    score: float | None = None,
    assessment_id: int | None = None,
    reasons: list | None = None,
    assessed_at: dt.datetime | None = None,
) -> Intervention | None:
    """React to a risk assessment: a rise in tier starts an episode or escalates the open
    one. Idempotent: the same assessment twice, or a tier that maps to a stage the lead
    is already at, changes nothing."""
    stage = TIER_STAGE.get(new_tier)
    if stage is None or RiskTier.rank(new_tier) <= RiskTier.rank(
        previous_tier or RiskTier.UNSCORED
    ):
        return None
    # One lock per lead serializes concurrent assessments of the same lead.
    lead = (
        Lead.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "assigned_agent")
        .filter(pk=lead_id, tenant_id=tenant_id)
        .first()
    )
    if lead is None or lead.status != LeadStatus.ACTIVE or lead.deleted_at is not None:
        return None
    now = timezone.now()
    stage_policy = stage_policy_active(tenant=lead.tenant, stage=stage)
    policy = stage_policy.policy
    # The open intervention if there is one (at most one per lead), else the latest.
    last = (
        Intervention.objects.filter(lead=lead)
        .order_by(
            Case(When(status__in=OPEN_STATUSES, then=Value(0)), default=Value(1)),
            "-episode",
            "-stage",
        )
        .first()
    )
    current = last if last is not None and last.status in OPEN_STATUSES else None
    if current is not None:
        if current.stage >= stage:
            return None
        _resolve(current, Outcome.NO_RESPONSE, f"risk rose to {new_tier} during the window", now)
        return _start(
            lead=lead,
            policy=policy,
            stage=stage,
            episode=current.episode,
            previous=current,
            tier=new_tier,
            score=score,
            assessment_id=assessment_id,
            reasons=reasons,
            detected_at=assessed_at or now,
            now=now,
            stage_policy=stage_policy,
        )
    if last is not None and last.resolved_at is not None and stage <= last.stage:
        cooldown = last.policy.stages.get(stage=last.stage).cooldown_hours
        if last.resolved_at + dt.timedelta(hours=cooldown) > now:
            return None
    return _start(
        lead=lead,
        policy=policy,
        stage=stage,
        episode=(last.episode + 1) if last else 1,
        previous=None,
        tier=new_tier,
        score=score,
        assessment_id=assessment_id,
        reasons=reasons,
        detected_at=assessed_at or now,
        now=now,
        stage_policy=stage_policy,
    )


def _start(
    *,
    lead: Lead,
    policy: InterventionPolicy,
    stage: int,
    episode: int,
    previous: Intervention | None,
    tier: str,
    score: float | None,
    assessment_id: int | None,
    reasons: list | None,
    detected_at: dt.datetime,
    now: dt.datetime,
    stage_policy: StagePolicy | None = None,
) -> Intervention:
    if stage_policy is None:
        stage_policy = policy.stages.get(stage=stage)
    cohort = cohort_assign(lead=lead, policy=policy)
    rng = random.Random(f"{lead.id}:{episode}:{stage}")
    variant = None if cohort.is_holdout else variant_choose(policy=policy, stage=stage, rng=rng)
    intervention = Intervention.objects.create(
        tenant_id=lead.tenant_id,
        lead=lead,
        episode=episode,
        stage=stage,
        policy=policy,
        variant=variant,
        is_holdout=cohort.is_holdout,
        # Held-out leads have nothing to send: their window starts at once, as a
        # treated lead's does, so both arms are measured over the same span.
        status=InterventionStatus.ACTIVE if cohort.is_holdout else InterventionStatus.PLANNED,
        activated_at=now if cohort.is_holdout else None,
        tier_at_start=tier,
        score_at_start=score,
        assessment_id=assessment_id,
        detected_at=detected_at,
        window_ends_at=now + dt.timedelta(hours=stage_policy.response_window_hours),
        previous=previous,
    )
    _emit(
        intervention,
        "started",
        "",
        holdout=cohort.is_holdout,
        variant=getattr(variant, "key", None),
    )
    _history(intervention, "started", now)
    if not cohort.is_holdout:
        requested = _plan_steps(intervention, lead, policy, stage_policy, reasons or [], now)
        if not requested:
            _activate(intervention, now, reason="nothing to send")
    if stage_policy.escalate_to_manager:
        from interventions.services.escalations import escalation_open

        escalation_open(intervention=intervention, now=now)
    return intervention


def _plan_steps(
    intervention: Intervention,
    lead: Lead,
    policy: InterventionPolicy,
    stage_policy: StagePolicy,
    reasons: list,
    now: dt.datetime,
) -> int:
    """Create the steps and their Messages (the outbox) in this transaction. Returns the
    number of messages requested; every other step is recorded as skipped with a reason."""
    day_sends, week_sends = lead_sends_in_windows(
        lead=lead, now=now, windows=(dt.timedelta(days=1), dt.timedelta(days=7))
    )
    week_by_channel = week_sends.by_channel
    day_count, week_count = day_sends.total, week_sends.total
    lead_zone = zone(lead.timezone, lead.tenant.timezone)
    requested = 0
    planned: list[int] = []
    for position, step in enumerate(stage_policy.channel_plan, start=1):
        channel, to = step["channel"], step.get("to", Recipient.LEAD)
        agent = lead.assigned_agent if to == Recipient.AGENT else None
        skip = None
        if to == Recipient.AGENT and (agent is None or not agent.is_active):
            skip = "the lead has no active assigned agent"
        elif to == Recipient.MANAGER:
            skip = "manager steps are sent by the escalation"
        elif to == Recipient.LEAD:
            channel_cap = policy.channel_caps_per_week.get(channel)
            if day_count >= policy.cap_per_day:
                skip = f"frequency cap: {policy.cap_per_day} messages per day reached"
            elif week_count >= policy.cap_per_week:
                skip = f"frequency cap: {policy.cap_per_week} messages per week reached"
            elif channel_cap is not None and week_by_channel.get(channel, 0) >= channel_cap:
                skip = f"frequency cap: {channel_cap} {channel} messages per week reached"
        if skip:
            _step_skip(intervention, position, channel, to, skip)
            continue
        not_before = None
        if to == Recipient.LEAD:
            release = quiet_hours_release(
                now, lead_zone, policy.quiet_hours_start, policy.quiet_hours_end
            )
            not_before = release if release > now else None
        # message_request is atomic itself (a savepoint here): a template or
        # configuration problem rolls back its own writes and skips this step with its
        # reason instead of failing the assessment that triggered it.
        try:
            message = message_request(
                tenant=lead.tenant,
                channel=channel,
                lead=lead,
                agent=agent,
                template_key=f"stage{intervention.stage}",
                variant=intervention.variant.key if intervention.variant else "A",
                context={
                    "stage": intervention.stage,
                    "risk_reasons": reasons,
                    "episode": intervention.episode,
                },
                idempotency_key=f"iv:{lead.id}:{intervention.episode}:{intervention.stage}:{position}",
                fallback_channels=list(step.get("fallback", [])),
                not_before=not_before,
                metadata={"intervention_id": intervention.id, "step": position},
                enqueue=False,
            )
        except ApplicationError as exc:
            _step_skip(intervention, position, channel, to, f"cannot send: {exc.message}")
            continue
        InterventionStep.objects.create(
            intervention=intervention,
            position=position,
            channel=channel,
            recipient=to,
            status=StepStatus.REQUESTED,
            message=message,
            not_before=not_before,
        )
        requested += 1
        planned.append(message.pk)
        if to == Recipient.LEAD:
            day_count += 1
            week_count += 1
            week_by_channel[channel] = week_by_channel.get(channel, 0) + 1
    # Sent together with every other message this transaction plans, after it commits
    # (interventions.services.dispatch: here in a worker when few, else batch tasks).
    planned_sends_dispatch_on_commit(message_ids=planned)
    return requested


def _step_skip(
    intervention: Intervention, position: int, channel: str, to: str, reason: str
) -> None:
    """Record a planned send that will not happen, and why (never dropped silently)."""
    reason = reason[:200]
    InterventionStep.objects.create(
        intervention=intervention,
        position=position,
        channel=channel,
        recipient=to,
        status=StepStatus.SKIPPED,
        skip_reason=reason,
    )
    _emit(intervention, "step_skipped", intervention.status, channel=channel, reason=reason)


def _history(intervention: Intervention, outcome: str, at: dt.datetime) -> None:
    """Tell churnapp, whose features read prior interventions and their outcomes."""
    lead_intervention_record(
        lead_id=intervention.lead_id,
        stage=intervention.stage,
        outcome=outcome,
        at=at,
        key=f"intervention:{intervention.id}:{outcome}",
    )


def _activate(intervention: Intervention, now: dt.datetime, reason: str = "") -> None:
    if intervention.status != InterventionStatus.PLANNED:
        return
    intervention.status = InterventionStatus.ACTIVE
    intervention.activated_at = now
    intervention.save(update_fields=["status", "activated_at"])
    _emit(intervention, "activated", InterventionStatus.PLANNED, reason=reason)


def _resolve(intervention: Intervention, outcome: str, reason: str, now: dt.datetime) -> None:
    previous_status = intervention.status
    intervention.status = InterventionStatus.RESOLVED
    intervention.outcome = outcome
    intervention.outcome_reason = reason[:200]
    intervention.resolved_at = now
    intervention.save(update_fields=["status", "outcome", "outcome_reason", "resolved_at"])
    for step in intervention.steps.filter(status=StepStatus.REQUESTED).select_related("message"):
        if step.message is not None and step.message.status == MessageStatus.QUEUED:
            message_cancel(message=step.message)
            step.status = StepStatus.CANCELLED
            step.save(update_fields=["status"])
    if intervention.variant_id is not None and outcome != Outcome.CANCELLED:
        variant_record_result(
            variant_id=intervention.variant_id, success=outcome in SUCCESS_OUTCOMES
        )
    _emit(intervention, "resolved", previous_status, reason=reason)
    _history(intervention, outcome, now)
    escalation = getattr(intervention, "escalation", None)
    if escalation is not None and outcome in SUCCESS_OUTCOMES:
        from interventions.services.escalations import escalation_close_on_outcome

        escalation_close_on_outcome(escalation=escalation, outcome=outcome, now=now)


def _locked_open(lead_id: int) -> Intervention | None:
    return (
        Intervention.objects.select_for_update()
        .filter(lead_id=lead_id, status__in=OPEN_STATUSES)
        .first()
    )


@transaction.atomic
def intervention_resolve(
    *, intervention: Intervention, outcome: str, reason: str = ""
) -> Intervention:
    """Record an outcome (from the CRM, a manager, or the evaluator)."""
    locked = Intervention.objects.select_for_update().get(pk=intervention.pk)
    if locked.status == InterventionStatus.RESOLVED:
        return locked
    _resolve(locked, outcome, reason or f"recorded as {outcome}", timezone.now())
    return locked


@transaction.atomic(savepoint=False)  # runs inside the ingest's transaction
def interventions_on_activity(
    *, tenant_id: int, activity_ids: Iterable[int], lead_ids: Iterable[int] | None = None
) -> int:
    """Inbound activity: a conversion or a reply ends the open intervention at once
    (stop on reply); other re-engagement marks it engaged. Both arms alike.

    `lead_ids` (the leads with inbound activity among them), when given, narrows the
    work to those leads."""
    # The open interventions first, in one query: most leads of a batch have none, and
    # then their activities need not be read back at all. A lead has at most one open
    # intervention (constraint); rows are locked in id order so that concurrent
    # batches cannot deadlock.
    activity_ids = list(activity_ids)
    if lead_ids is None:
        lead_ids = LeadActivity.objects.filter(
            tenant_id=tenant_id, id__in=activity_ids
        ).values_list("lead_id", flat=True)
    # Locked by plain SQL with one array parameter: this runs in every ingest batch and
    # every engagement callback, nearly always to find nothing, and the ORM form (IN of
    # up to a thousand ids, select_related) cost more to compile than to run.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Intervention._meta.db_table}"
            " WHERE tenant_id = %s AND lead_id = ANY(%s::bigint[]) AND status = ANY(%s)"
            " ORDER BY id FOR UPDATE",
            [tenant_id, list(lead_ids), [s.value for s in OPEN_STATUSES]],
        )
        locked_ids = [row[0] for row in cursor.fetchall()]
    if not locked_ids:
        return 0
    by_lead = {
        i.lead_id: i
        for i in Intervention.objects.select_related("policy")
        .filter(pk__in=locked_ids)
        .order_by("pk")
    }
    rows = (
        LeadActivity.objects.filter(
            tenant_id=tenant_id, id__in=activity_ids, lead_id__in=list(by_lead)
        )
        .values_list("lead_id", "kind", "occurred_at", "payload")
        .order_by("occurred_at")
    )
    per_lead: dict[int, list[tuple[str, dt.datetime]]] = {}
    for lead_id, kind, occurred_at, payload in rows:
        if kind == ActivityKind.SMS_INBOUND and _is_opt_out(payload):
            # "STOP" is an answer, not re-engagement: notifications suppresses the
            # number and its recipient_opted_out ends the intervention as unsubscribed.
            continue
        per_lead.setdefault(lead_id, []).append((kind, occurred_at))
    changed = 0
    now = timezone.now()
    for lead_id, intervention in by_lead.items():
        events = [(k, t) for k, t in per_lead.get(lead_id, []) if t >= intervention.planned_at]
        kinds = {k for k, _ in events}
        if kinds & CONVERSION_KINDS:
            _resolve(intervention, Outcome.CONVERTED, "the lead converted", now)
        elif kinds & CHURN_KINDS:
            _resolve(intervention, Outcome.CHURNED, "the opportunity was lost", now)
        elif kinds & REPLY_KINDS and intervention.policy.stop_on_reply:
            _resolve(intervention, Outcome.RE_ENGAGED, "the lead replied", now)
        elif kinds & REENGAGE_KINDS:
            _engage(intervention, now, "inbound activity")
        else:
            continue
        changed += 1
    return changed


def _is_opt_out(payload: dict | None) -> bool:
    payload = payload or {}
    if payload.get("keyword") == "stop":
        return True
    body = str(payload.get("body") or "").strip().upper()
    return body in OPT_OUT_KEYWORDS


def _engage(intervention: Intervention, now: dt.datetime, reason: str) -> None:
    if intervention.status in (InterventionStatus.ENGAGED, InterventionStatus.RESOLVED):
        return
    previous = intervention.status
    intervention.status = InterventionStatus.ENGAGED
    intervention.engaged_at = now
    if intervention.activated_at is None:
        intervention.activated_at = now
    intervention.save(update_fields=["status", "engaged_at", "activated_at"])
    _emit(intervention, "engaged", previous, reason=reason)


_ENGAGE_BY_ID = f"""
    WITH cur AS (
        SELECT id, status FROM {Intervention._meta.db_table} WHERE id = %(id)s FOR UPDATE
    )
    UPDATE {Intervention._meta.db_table} AS i
       SET status = %(engaged)s, engaged_at = %(now)s,
           activated_at = CASE WHEN cur.status = %(planned)s THEN %(now)s
                               ELSE COALESCE(i.activated_at, %(now)s) END
      FROM cur
     WHERE i.id = cur.id AND cur.status IN (%(planned)s, %(active)s)
    RETURNING i.tenant_id, i.lead_id, i.stage, i.episode, i.is_holdout, i.outcome, cur.status
"""


def _engage_by_id(intervention_id: int, now: dt.datetime, reason: str) -> None:
    """An open or click engages its intervention: _activate then _engage, as one locked
    UPDATE of plain SQL that also returns the status it moved from.

    Every email open of an intervention's message takes this path, inside the open
    pixel's own request: the ORM lock (forty-odd columns compiled and instantiated) and
    save were a third of that request. An intervention already engaged or resolved, or
    no longer there, matches no row and nothing is emitted, as before."""
    with connection.cursor() as cursor:
        cursor.execute(
            _ENGAGE_BY_ID,
            {
                "id": intervention_id,
                "now": now,
                "engaged": InterventionStatus.ENGAGED,
                "planned": InterventionStatus.PLANNED,
                "active": InterventionStatus.ACTIVE,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return
    tenant_id, lead_id, stage, episode, is_holdout, outcome, previous = row
    intervention = Intervention(
        id=intervention_id,
        tenant_id=tenant_id,
        lead_id=lead_id,
        stage=stage,
        episode=episode,
        is_holdout=is_holdout,
        outcome=outcome,
        status=InterventionStatus.ACTIVE,
    )
    if previous == InterventionStatus.PLANNED:
        _emit(intervention, "activated", InterventionStatus.PLANNED, reason="first message sent")
    intervention.status = InterventionStatus.ENGAGED
    _emit(intervention, "engaged", InterventionStatus.ACTIVE, reason=reason)


# No savepoint: it runs inside the message's own transaction (its signal's receiver),
# and an error here fails that transaction as a whole anyway. SAVEPOINT and RELEASE
# were two of an intervention email's open's dozen round trips.
@transaction.atomic(savepoint=False)
def intervention_on_message(
    *, intervention_id: int, new_status: str, engagement: str | None = None
) -> None:
    """A message of the intervention moved: the first send activates it; an open or
    click engages it; a reply ends it when the policy stops on reply."""
    now = timezone.now()
    if engagement in ("opened", "clicked"):
        _engage_by_id(intervention_id, now, f"message {engagement}")
        return
    intervention = Intervention.objects.select_for_update().filter(pk=intervention_id).first()
    if intervention is None or not intervention.is_open:
        return
    if engagement == "replied":
        if intervention.policy.stop_on_reply:
            _resolve(intervention, Outcome.RE_ENGAGED, "the lead replied", now)
        else:
            _engage(intervention, now, "the lead replied")
    elif new_status in (MessageStatus.SENT, MessageStatus.DELIVERED):
        _activate(intervention, now, reason="first message sent")


@transaction.atomic
def intervention_on_opt_out(*, tenant_id: int, lead_id: int, channel: str) -> None:
    intervention = _locked_open(lead_id)
    if intervention is not None and intervention.tenant_id == tenant_id:
        _resolve(
            intervention, Outcome.UNSUBSCRIBED, f"the lead opted out of {channel}", timezone.now()
        )


def interventions_evaluate_due(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Resolve every open intervention whose response window has closed. Each one in its
    own transaction, locked with SKIP LOCKED so overlapping runs share the work."""
    now = now or timezone.now()
    done = 0
    while done < limit:
        # Escalations' sends are published (batch tasks), not sent in place one by one.
        with sends_published(), transaction.atomic():
            intervention = (
                Intervention.objects.select_for_update(skip_locked=True, of=("self",), no_key=True)
                .select_related("lead", "lead__tenant", "lead__assigned_agent", "policy")
                .filter(status__in=OPEN_STATUSES, window_ends_at__lte=now)
                .order_by("window_ends_at", "id")
                .first()
            )
            if intervention is None:
                break
            _evaluate(intervention, now)
        done += 1
    return done


def _evaluate(intervention: Intervention, now: dt.datetime) -> None:
    lead = intervention.lead
    kinds = set(
        LeadActivity.objects.filter(
            lead=lead, occurred_at__gte=intervention.planned_at, occurred_at__lte=now
        ).values_list("kind", flat=True)
    )
    if kinds & CONVERSION_KINDS or lead.status == LeadStatus.CONVERTED:
        _resolve(intervention, Outcome.CONVERTED, "the lead converted", now)
    elif kinds & CHURN_KINDS or lead.status == LeadStatus.LOST:
        _resolve(intervention, Outcome.CHURNED, "the lead was lost", now)
    elif kinds & REENGAGE_KINDS:
        _resolve(intervention, Outcome.RE_ENGAGED, "inbound activity in the window", now)
    elif intervention.stage < Stage.CRITICAL and RiskTier.rank(lead.risk_tier) >= RiskTier.rank(
        RiskTier.EARLY_WARNING
    ):
        _resolve(intervention, Outcome.NO_RESPONSE, "silent through the window; escalating", now)
        _start(
            lead=Lead.objects.select_for_update(of=("self",), no_key=True)
            .select_related("tenant", "assigned_agent")
            .get(pk=lead.pk),
            policy=policy_ensure(tenant=lead.tenant),
            stage=intervention.stage + 1,
            episode=intervention.episode,
            previous=intervention,
            tier=lead.risk_tier,
            score=lead.risk_score,
            assessment_id=None,
            reasons=[],
            detected_at=now,
            now=now,
        )
    elif intervention.stage == Stage.CRITICAL and (
        lead.last_inbound_at is None or lead.last_inbound_at < now - CHURN_SILENCE
    ):
        _resolve(intervention, Outcome.CHURNED, "no inbound activity for 30 days", now)
    else:
        _resolve(intervention, Outcome.NO_RESPONSE, "silent through the window", now)
