"""Policies, interventions and their planned steps, cohorts, variants and escalations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import models
from django.db.models import Q

from churnapp.models import Agent, Lead, Tenant


class Stage(models.IntegerChoices):
    EARLY_WARNING = 1, "Stage 1: early warning"
    ACTIVE_RISK = 2, "Stage 2: active risk"
    CRITICAL = 3, "Stage 3: critical"


class Recipient(models.TextChoices):
    LEAD = "lead", "The lead"
    AGENT = "agent", "The lead's agent"
    MANAGER = "manager", "The escalation manager"


class VariantMode(models.TextChoices):
    THOMPSON = "thompson", "Thompson sampling on observed success"
    FIXED = "fixed", "Fixed split by weight"


class EscalationRule(models.TextChoices):
    AGENT_MANAGER = "agent_manager", "The agent's manager, else round robin"
    ROUND_ROBIN = "round_robin", "Round robin among managers"


class InterventionPolicy(models.Model):
    """A tenant's contact rules. Versioned: a change publishes a new row, the old one is
    kept (interventions point at the version they were planned under)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="policies")
    version = models.PositiveIntegerField(default=1)
    is_active = models.BooleanField(default=True)
    holdout_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("10.00"),
        help_text="Share of leads kept as a randomized control group (receive nothing).",
    )
    cap_per_day = models.PositiveSmallIntegerField(
        default=2, help_text="At most this many messages to one lead per day, all channels."
    )
    cap_per_week = models.PositiveSmallIntegerField(default=5)
    channel_caps_per_week = models.JSONField(
        default=dict, blank=True, help_text='Per channel weekly caps, e.g. {"sms": 3}.'
    )
    quiet_hours_start = models.TimeField(default=dt.time(21, 0))
    quiet_hours_end = models.TimeField(default=dt.time(8, 0))
    stop_on_reply = models.BooleanField(default=True)
    escalation_rule = models.CharField(
        max_length=16, choices=EscalationRule.choices, default=EscalationRule.AGENT_MANAGER
    )
    escalation_sla_business_hours = models.PositiveSmallIntegerField(default=4)
    business_day_start = models.TimeField(default=dt.time(9, 0))
    business_day_end = models.TimeField(default=dt.time(17, 0))
    variant_mode = models.CharField(
        max_length=16, choices=VariantMode.choices, default=VariantMode.THOMPSON
    )
    exploration_floor = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.100"),
        help_text="Chance of picking a variant uniformly at random, so none starves.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name_plural = "intervention policies"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="policy_unique_version"),
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(is_active=True), name="policy_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} policy v{self.version}{' (active)' if self.is_active else ''}"

    def stage(self, stage: int) -> StagePolicy:
        return self.stages.get(stage=stage)


class StagePolicy(models.Model):
    """What one stage does: its channel plan, response window, cooldown and target."""

    policy = models.ForeignKey(InterventionPolicy, on_delete=models.CASCADE, related_name="stages")
    stage = models.PositiveSmallIntegerField(choices=Stage.choices)
    # Ordered steps: [{"channel": "email", "to": "lead", "fallback": ["sms"]}, ...]
    channel_plan = models.JSONField()
    response_window_hours = models.PositiveIntegerField()
    cooldown_hours = models.PositiveIntegerField(
        default=72, help_text="After an episode ends here, no new episode for this long."
    )
    success_target = models.DecimalField(max_digits=4, decimal_places=3)
    escalate_to_manager = models.BooleanField(default=False)

    class Meta:
        ordering = ["stage"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "stage"], name="stagepolicy_unique_stage")
        ]

    def __str__(self) -> str:
        return f"stage {self.stage} of {self.policy}"


class LeadCohort(models.Model):
    """The lead's sticky experiment arm, fixed the first time the lead is at risk."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, related_name="cohort")
    is_holdout = models.BooleanField()
    holdout_percent = models.DecimalField(max_digits=5, decimal_places=2)
    hash_value = models.FloatField(help_text="Keyed hash of the lead in [0, 1).")
    assigned_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.lead_id}: {'holdout' if self.is_holdout else 'treated'}"


class MessageVariant(models.Model):
    """An A/B/n arm of a stage's messages; its templates are `stage<N>.<channel>` at this key."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="variants")
    stage = models.PositiveSmallIntegerField(choices=Stage.choices)
    key = models.CharField(max_length=16, help_text="Variant key of the templates, e.g. A, B.")
    description = models.CharField(max_length=200, blank=True, default="")
    weight = models.PositiveSmallIntegerField(default=1, help_text="For the fixed split.")
    is_active = models.BooleanField(default=True)
    trials = models.PositiveIntegerField(default=0, editable=False)
    successes = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["stage", "key"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "stage", "key"], name="variant_unique_key")
        ]

    def __str__(self) -> str:
        return f"stage {self.stage} variant {self.key}"

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


class InterventionStatus(models.TextChoices):
    PLANNED = "planned"
    ACTIVE = "active"
    ENGAGED = "engaged"
    RESOLVED = "resolved"


OPEN_STATUSES = (InterventionStatus.PLANNED, InterventionStatus.ACTIVE, InterventionStatus.ENGAGED)


class Outcome(models.TextChoices):
    RE_ENGAGED = "re_engaged", "Re-engaged"
    CONVERTED = "converted", "Converted"
    CHURNED = "churned", "Churned"
    NO_RESPONSE = "no_response", "No response"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    CANCELLED = "cancelled", "Cancelled"


SUCCESS_OUTCOMES = (Outcome.RE_ENGAGED, Outcome.CONVERTED)


class Intervention(models.Model):
    """One stage of one episode for one lead. An episode runs stage 1 -> 2 -> 3 while the
    lead stays silent; treated and held-out leads both get rows, only treated get sends."""

    # No single-column tenant or lead index: the composite indexes below lead with them,
    # and every status move (not a HOT update: the status is indexed) writes each index.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="interventions", db_index=False
    )
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="interventions", db_index=False
    )
    episode = models.PositiveIntegerField()
    stage = models.PositiveSmallIntegerField(choices=Stage.choices)
    policy = models.ForeignKey(InterventionPolicy, on_delete=models.PROTECT, related_name="+")
    variant = models.ForeignKey(
        MessageVariant,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    is_holdout = models.BooleanField()
    status = models.CharField(
        max_length=16, choices=InterventionStatus.choices, default=InterventionStatus.PLANNED
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="")
    outcome_reason = models.CharField(max_length=200, blank=True, default="")
    tier_at_start = models.CharField(max_length=16)
    score_at_start = models.FloatField(null=True, blank=True)
    assessment_id = models.BigIntegerField(null=True, blank=True)
    detected_at = models.DateTimeField(help_text="When the risk that triggered this was assessed.")
    planned_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    engaged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    window_ends_at = models.DateTimeField()
    previous = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="next_stage"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lead", "episode", "stage"], name="intervention_unique_stage"
            ),
            models.UniqueConstraint(
                fields=["lead"],
                condition=Q(status__in=["planned", "active", "engaged"]),
                name="intervention_one_open_per_lead",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "window_ends_at"], name="interv_open_window"),
            models.Index(fields=["tenant", "planned_at"], name="interv_tenant_time"),
            # Analytics (tracking) read the interventions resolved in a period.
            models.Index(fields=["tenant", "resolved_at"], name="interv_tenant_resolved"),
            # Only experiments' interventions have a variant: its deletes look here.
            models.Index(
                fields=["variant"], name="interv_variant", condition=Q(variant__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"lead {self.lead_id} episode {self.episode} stage {self.stage} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class StepStatus(models.TextChoices):
    REQUESTED = "requested", "Handed to notifications"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class InterventionStep(models.Model):
    """One planned send of an intervention: requested as a Message, or skipped with a reason."""

    intervention = models.ForeignKey(Intervention, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    channel = models.CharField(max_length=16)
    recipient = models.CharField(max_length=8, choices=Recipient.choices)
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    skip_reason = models.CharField(max_length=200, blank=True, default="")
    message = models.ForeignKey(
        "notifications.Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    not_before = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["intervention", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["intervention", "position"], name="step_unique_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} -> {self.recipient} ({self.status})"


class EscalationStatus(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Escalation(models.Model):
    """A stage-3 lead handed to a manager, with an SLA in business hours."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="escalations")
    intervention = models.OneToOneField(
        Intervention, on_delete=models.CASCADE, related_name="escalation"
    )
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="escalations")
    manager = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="escalations"
    )
    status = models.CharField(
        max_length=16, choices=EscalationStatus.choices, default=EscalationStatus.OPEN
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    sla_due_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    breached_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "sla_due_at"], name="escalation_queue")]

    def __str__(self) -> str:
        return f"escalation of lead {self.lead_id} ({self.status})"
