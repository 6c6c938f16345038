"""The three-stage orchestration: start or escalate on a tier rise, plan the sends under
the tenant's contact rules, react to engagement, and resolve each stage's outcome."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.models import ActivityKind, Lead, LeadActivity, LeadStatus, RiskTier
from churnapp.prepared import execute_prepared
from churnapp.services.intervention_history import (
    lead_intervention_record,
    lead_intervention_records,
)
from interventions.clock import quiet_hours_release, zone
from interventions.models import (
    OPEN_STATUSES,
    SUCCESS_OUTCOMES,
    Intervention,
    InterventionPolicy,
    InterventionStatus,
    InterventionStep,
    LeadCohort,
    MessageVariant,
    Outcome,
    Recipient,
    Stage,
    StagePolicy,
    StepStatus,
)
from interventions.selectors import SendCounts, leads_sends_in_windows
from interventions.services.dispatch import planned_sends_dispatch_on_commit, sends_published
from interventions.services.experiments import (
    cohort_new,
    cohorts_insert,
    cohorts_standing,
    variant_pick,
    variant_record_result,
    variants_active,
)
from interventions.services.policy import policy_ensure, stage_policy_active
from interventions.signals import intervention_changed
from notifications.models import Message, MessageStatus
from notifications.services import MessageBatch, message_withdraw
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


@dataclass
class _Start:
    """One intervention to start: decided lead by lead, written with the others."""

    lead: Lead
    policy: InterventionPolicy
    stage_policy: StagePolicy
    stage: int
    episode: int
    previous: Intervention | None
    tier: str
    score: float | None
    assessment_id: int | None
    reasons: list
    detected_at: dt.datetime
    cohort: LeadCohort | None = None
    variant: MessageVariant | None = None
    intervention: Intervention | None = None
    # (step, message created by this batch or None): in position order
    steps: list[tuple[InterventionStep, Message | None]] = field(default_factory=list)


def _is_rise(previous_tier: str | None, new_tier: str) -> bool:
    return TIER_STAGE.get(new_tier) is not None and RiskTier.rank(new_tier) > RiskTier.rank(
        previous_tier or RiskTier.UNSCORED
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
    is already at, changes nothing. (interventions_on_risk with one change.)"""
    return interventions_on_risk(
        tenant_id=tenant_id,
        changes=[
            {
                "lead_id": lead_id,
                "previous_tier": previous_tier,
                "new_tier": new_tier,
                "score": score,
                "assessment_id": assessment_id,
                "reasons": reasons,
                "assessed_at": assessed_at,
            }
        ],
    )[0]


@transaction.atomic(savepoint=False)
def interventions_on_risk(
    *, tenant_id: int, changes: Sequence[Mapping]
) -> list[Intervention | None]:
    """`intervention_on_risk` for many tier changes of one tenant (a scoring chunk's),
    with the same outcome as one call per change in the order given, set-based: one lock
    of the leads (in id order), one read of their latest interventions, the tenant's
    stage policies, cohorts and variants read once, then one INSERT per table for the
    interventions, cohorts, messages, steps and history rows. Each change is a mapping
    of intervention_on_risk's arguments (lead_id, previous_tier, new_tier, score,
    assessment_id, reasons, assessed_at). Returns, per change, the intervention it
    started or None.

    What depends on the order of the changes is kept in it: the decisions (and the
    resolution of an open intervention a rise ends, which moves its variant's counts
    before the next lead's variant is drawn) are made lead by lead in order, and after
    the writes each intervention's lifecycle events (started, its steps' skips and queued
    messages, activated), and its stage-3 escalation, follow in that order too."""
    results: list[Intervention | None] = [None] * len(changes)
    group: list[tuple[int, Mapping]] = []
    seen: set[int] = set()
    for index, change in enumerate(changes):
        if not _is_rise(change.get("previous_tier"), change["new_tier"]):
            continue
        if change["lead_id"] in seen:
            # The same lead again: decided after the first change is written, as it
            # would be one by one.
            _on_risk_group(tenant_id=tenant_id, group=group, results=results)
            group, seen = [], set()
        group.append((index, change))
        seen.add(change["lead_id"])
    _on_risk_group(tenant_id=tenant_id, group=group, results=results)
    return results


class _VariantCounts:
    """The tenant's active variants per stage, read once per batch. A resolution in the
    batch records its variant's trial in the database (variant_record_result) and here,
    so the next draw sees it as a fresh read one by one would."""

    def __init__(self, tenant_id: int) -> None:
        self.tenant_id = tenant_id
        self.by_stage: dict[int, list[MessageVariant]] = {}

    def active(self, stage: int) -> list[MessageVariant]:
        if stage not in self.by_stage:
            self.by_stage[stage] = variants_active(tenant_id=self.tenant_id, stage=stage)
        return self.by_stage[stage]

    def resolved(self, intervention: Intervention, outcome: str) -> None:
        if intervention.variant_id is None or outcome == Outcome.CANCELLED:
            return
        for variants in self.by_stage.values():
            for variant in variants:
                if variant.pk == intervention.variant_id:
                    variant.trials += 1
                    variant.successes += 1 if outcome in SUCCESS_OUTCOMES else 0


def _on_risk_group(
    *, tenant_id: int, group: list[tuple[int, Mapping]], results: list[Intervention | None]
) -> None:
    """The changes of distinct leads: decide in order, then write together."""
    if not group:
        return
    # One lock per lead serializes concurrent assessments of the same lead; taken in id
    # order so that concurrent batches cannot deadlock.
    leads = {
        lead.pk: lead
        for lead in Lead.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "assigned_agent")
        .filter(pk__in=sorted({change["lead_id"] for _, change in group}), tenant_id=tenant_id)
        .order_by("pk")
    }
    live = [
        lead_id
        for lead_id, lead in leads.items()
        if lead.status == LeadStatus.ACTIVE and lead.deleted_at is None
    ]
    if not live:
        return
    now = timezone.now()
    tenant = leads[live[0]].tenant
    # The open intervention of each lead if there is one (at most one per lead), else
    # its latest.
    last_by_lead = {
        i.lead_id: i
        for i in Intervention.objects.filter(tenant_id=tenant_id, lead_id__in=live)
        .order_by(
            "lead_id",
            Case(When(status__in=OPEN_STATUSES, then=Value(0)), default=Value(1)),
            "-episode",
            "-stage",
        )
        .distinct("lead_id")
    }
    stage_policies: dict[int, StagePolicy] = {}
    cooldowns: dict[tuple[int, int], int] = {}
    variants = _VariantCounts(tenant.pk)
    standing = cohorts_standing(lead_ids=live)
    starts: list[tuple[int, _Start]] = []
    for index, change in group:
        lead = leads.get(change["lead_id"])
        if lead is None or lead.status != LeadStatus.ACTIVE or lead.deleted_at is not None:
            continue
        new_tier = change["new_tier"]
        stage = TIER_STAGE[new_tier]
        if stage not in stage_policies:
            stage_policies[stage] = stage_policy_active(tenant=tenant, stage=stage)
        stage_policy = stage_policies[stage]
        last = last_by_lead.get(lead.pk)
        current = last if last is not None and last.status in OPEN_STATUSES else None
        previous = None
        if current is not None:
            if current.stage >= stage:
                continue
            _resolve(
                current, Outcome.NO_RESPONSE, f"risk rose to {new_tier} during the window", now
            )
            variants.resolved(current, Outcome.NO_RESPONSE)
            episode, previous = current.episode, current
        else:
            if last is not None and last.resolved_at is not None and stage <= last.stage:
                key = (last.policy_id, last.stage)
                if key not in cooldowns:
                    cooldowns[key] = StagePolicy.objects.values_list(
                        "cooldown_hours", flat=True
                    ).get(policy_id=last.policy_id, stage=last.stage)
                if last.resolved_at + dt.timedelta(hours=cooldowns[key]) > now:
                    continue
            episode = (last.episode + 1) if last else 1
        start = _Start(
            lead=lead,
            policy=stage_policy.policy,
            stage_policy=stage_policy,
            stage=stage,
            episode=episode,
            previous=previous,
            tier=new_tier,
            score=change.get("score"),
            assessment_id=change.get("assessment_id"),
            reasons=change.get("reasons") or [],
            detected_at=change.get("assessed_at") or now,
        )
        _arm_choose(start, standing=standing, variants=variants)
        starts.append((index, start))
    _starts_write([start for _, start in starts], now=now)
    for index, start in starts:
        results[index] = start.intervention


def _arm_choose(
    start: _Start, *, standing: dict[int, LeadCohort], variants: _VariantCounts
) -> None:
    """The lead's experiment arm (the standing cohort, else a new one) and, if treated,
    its variant drawn with the rng seeded by lead, episode and stage."""
    lead = start.lead
    start.cohort = standing.get(lead.pk) or cohort_new(lead=lead, policy=start.policy)
    rng = random.Random(f"{lead.id}:{start.episode}:{start.stage}")
    start.variant = (
        None
        if start.cohort.is_holdout
        else variant_pick(policy=start.policy, variants=variants.active(start.stage), rng=rng)
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
    """Start one intervention (the window evaluator's escalation): _starts_write of one."""
    if stage_policy is None:
        stage_policy = policy.stages.get(stage=stage)
    start = _Start(
        lead=lead,
        policy=policy,
        stage_policy=stage_policy,
        stage=stage,
        episode=episode,
        previous=previous,
        tier=tier,
        score=score,
        assessment_id=assessment_id,
        reasons=reasons or [],
        detected_at=detected_at,
    )
    _arm_choose(
        start,
        standing=cohorts_standing(lead_ids=[lead.pk]),
        variants=_VariantCounts(lead.tenant_id),
    )
    _starts_write([start], now=now)
    return start.intervention


def _starts_write(starts: list[_Start], *, now: dt.datetime) -> None:
    """Write the decided interventions of distinct leads (locked by the caller) together:
    new cohorts, the interventions, their steps' messages (notifications' MessageBatch),
    the steps, churnapp's history rows; then, intervention by intervention, what one
    would announce: started, each step's skip or queued message, activated when nothing
    is sent, the stage-3 escalation. The planned sends go out after commit."""
    if not starts:
        return
    cohorts_insert(cohorts=[s.cohort for s in starts if s.cohort.pk is None])
    for s in starts:
        holdout = s.cohort.is_holdout
        s.intervention = Intervention(
            tenant_id=s.lead.tenant_id,
            lead=s.lead,
            episode=s.episode,
            stage=s.stage,
            policy=s.policy,
            variant=s.variant,
            is_holdout=holdout,
            # Held-out leads have nothing to send: their window starts at once, as a
            # treated lead's does, so both arms are measured over the same span.
            status=InterventionStatus.ACTIVE if holdout else InterventionStatus.PLANNED,
            activated_at=now if holdout else None,
            tier_at_start=s.tier,
            score_at_start=s.score,
            assessment_id=s.assessment_id,
            detected_at=s.detected_at,
            window_ends_at=now + dt.timedelta(hours=s.stage_policy.response_window_hours),
            previous=s.previous,
        )
    Intervention.objects.bulk_create([s.intervention for s in starts])
    treated = [s for s in starts if not s.cohort.is_holdout]
    if treated:
        batch = MessageBatch(tenant=treated[0].lead.tenant)
        batch.prefetch(
            idempotency_keys=[
                _step_key(s.intervention, position)
                for s in treated
                for position in range(1, len(s.stage_policy.channel_plan) + 1)
            ]
        )
        sends = leads_sends_in_windows(
            lead_ids=[s.lead.pk for s in treated],
            now=now,
            windows=(dt.timedelta(days=1), dt.timedelta(days=7)),
        )
        for s in treated:
            _steps_plan(s, batch, sends[s.lead.pk], now)
        new_messages = set(map(id, batch.write()))
        for s in treated:
            s.steps = [
                (step, message if id(message) in new_messages else None)
                for step, message in s.steps
            ]
        InterventionStep.objects.bulk_create([step for s in treated for step, _ in s.steps])
    lead_intervention_records(
        events=[
            (s.lead.pk, s.stage, "started", now, _history_key(s.intervention, "started"))
            for s in starts
        ]
    )
    planned: list[int] = []
    for s in starts:
        intervention = s.intervention
        _emit(
            intervention,
            "started",
            "",
            holdout=s.cohort.is_holdout,
            variant=getattr(s.variant, "key", None),
        )
        requested = 0
        for step, new_message in s.steps:
            if step.status == StepStatus.SKIPPED:
                _emit(
                    intervention,
                    "step_skipped",
                    intervention.status,
                    channel=step.channel,
                    reason=step.skip_reason,
                )
                continue
            if new_message is not None:
                MessageBatch.announce(new_message)
            requested += 1
            planned.append(step.message_id)
        if not s.cohort.is_holdout and not requested:
            _activate(intervention, now, reason="nothing to send")
        if s.stage_policy.escalate_to_manager:
            from interventions.services.escalations import escalation_open

            escalation_open(intervention=intervention, now=now)
    # Sent together with every other message this transaction plans, after it commits
    # (interventions.services.dispatch: here in a worker when few, else batch tasks).
    planned_sends_dispatch_on_commit(message_ids=planned)


def _step_key(intervention: Intervention, position: int) -> str:
    return f"iv:{intervention.lead_id}:{intervention.episode}:{intervention.stage}:{position}"


def _steps_plan(
    start: _Start,
    batch: MessageBatch,
    sends: list[SendCounts],
    now: dt.datetime,
) -> None:
    """Decide each step of the stage's plan under the tenant's contact rules and request
    its message in `batch` (start.steps, unsaved); every step not requested is recorded
    as skipped with a reason."""
    intervention, lead, policy = start.intervention, start.lead, start.policy
    day_sends, week_sends = sends
    week_by_channel = dict(week_sends.by_channel)
    day_count, week_count = day_sends.total, week_sends.total
    lead_zone = zone(lead.timezone, lead.tenant.timezone)
    for position, step in enumerate(start.stage_policy.channel_plan, start=1):
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
        not_before = None
        if skip is None:
            if to == Recipient.LEAD:
                release = quiet_hours_release(
                    now, lead_zone, policy.quiet_hours_start, policy.quiet_hours_end
                )
                not_before = release if release > now else None
            # A template or configuration problem skips this step with its reason
            # instead of failing the assessment that triggered it.
            try:
                message = batch.request(
                    channel=channel,
                    lead=lead,
                    agent=agent,
                    template_key=f"stage{intervention.stage}",
                    variant=intervention.variant.key if intervention.variant else "A",
                    context={
                        "stage": intervention.stage,
                        "risk_reasons": start.reasons,
                        "episode": intervention.episode,
                    },
                    idempotency_key=_step_key(intervention, position),
                    fallback_channels=list(step.get("fallback", [])),
                    not_before=not_before,
                    metadata={"intervention_id": intervention.id, "step": position},
                )
            except ApplicationError as exc:
                skip = f"cannot send: {exc.message}"
        # A step not requested is recorded as skipped with its reason, never dropped.
        requested = None if skip else message
        start.steps.append(
            (
                InterventionStep(
                    intervention=intervention,
                    position=position,
                    channel=channel,
                    recipient=to,
                    status=StepStatus.SKIPPED if skip else StepStatus.REQUESTED,
                    skip_reason=(skip or "")[:200],
                    message=requested,
                    not_before=None if skip else not_before,
                ),
                requested,
            )
        )
        if skip:
            continue
        if to == Recipient.LEAD:
            day_count += 1
            week_count += 1
            week_by_channel[channel] = week_by_channel.get(channel, 0) + 1


def _history_key(intervention: Intervention, outcome: str) -> str:
    return f"intervention:{intervention.id}:{outcome}"


def _history(intervention: Intervention, outcome: str, at: dt.datetime) -> None:
    """Tell churnapp, whose features read prior interventions and their outcomes."""
    lead_intervention_record(
        lead_id=intervention.lead_id,
        stage=intervention.stage,
        outcome=outcome,
        at=at,
        key=_history_key(intervention, outcome),
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
        # Queued when read, and checked again under the message's lock: a send worker may
        # have claimed it since; then it goes on and its step settles from the send.
        if (
            step.message is not None
            and step.message.status == MessageStatus.QUEUED
            and message_withdraw(message=step.message)
        ):
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
        execute_prepared(
            cursor,
            [("churn_intervention_engage", _ENGAGE_BY_ID)],
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
