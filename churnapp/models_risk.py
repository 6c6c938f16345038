"""Risk scoring tables: thresholds, churn definition, model registry, runs, assessments
and daily snapshots."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

__all__ = [
    "AssessmentKind",
    "ChurnDefinition",
    "ChurnModel",
    "ChurnModelStatus",
    "InterventionOutcome",
    "LeadInterventionEvent",
    "RiskAssessment",
    "RiskSnapshot",
    "RiskThresholds",
    "ScoringChunk",
    "ScoringChunkStatus",
    "ScoringRun",
]


class RiskThresholds(models.Model):
    """The one table every part of the system reads to turn a probability into a tier.

    Scores are calibrated probabilities of churning within the tenant's label horizon,
    so a threshold reads as "this lead has at least an X chance of going cold".
    """

    tenant = models.OneToOneField(
        "churnapp.Tenant", on_delete=models.CASCADE, related_name="risk_thresholds"
    )
    early_warning = models.FloatField(default=0.35)
    active_risk = models.FloatField(default=0.55)
    critical = models.FloatField(default=0.75)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "risk thresholds"
        verbose_name_plural = "risk thresholds"
        constraints = [
            models.CheckConstraint(
                condition=Q(early_warning__gt=0)
                & Q(early_warning__lt=models.F("active_risk"))
                & Q(active_risk__lt=models.F("critical"))
                & Q(critical__lt=1),
                name="risk_thresholds_ordered",
            )
        ]

    def __str__(self) -> str:
        return f"{self.early_warning:.2f} / {self.active_risk:.2f} / {self.critical:.2f}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if not 0 < self.early_warning < self.active_risk < self.critical < 1:
            raise ValidationError(
                "Thresholds must rise strictly between 0 and 1: "
                "early warning < active risk < critical."
            )


class ChurnDefinition(models.Model):
    """What churn means for a tenant's labels: marked lost, or silent for the horizon."""

    tenant = models.OneToOneField(
        "churnapp.Tenant", on_delete=models.CASCADE, related_name="churn_definition"
    )
    horizon_days = models.PositiveSmallIntegerField(
        default=30, help_text="No inbound activity for this many days after a snapshot = churn."
    )
    lost_is_churn = models.BooleanField(default=True)
    snapshot_every_days = models.PositiveSmallIntegerField(default=7)
    min_training_snapshots = models.PositiveIntegerField(
        default=500, help_text="Below this many labelled snapshots the rules scorer is used."
    )
    min_positive_snapshots = models.PositiveIntegerField(default=50)
    max_training_leads = models.PositiveIntegerField(
        default=50_000,
        help_text="Train on an even sample of at most this many leads (bounds training time).",
    )

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.horizon_days}d"


class ChurnModelStatus(models.TextChoices):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


class ChurnModel(models.Model):
    """A trained, calibrated model: the artifact and everything needed to trust it."""

    tenant = models.ForeignKey(
        "churnapp.Tenant", on_delete=models.CASCADE, related_name="churn_models"
    )
    version = models.CharField(max_length=64)
    algorithm = models.CharField(max_length=32)
    status = models.CharField(
        max_length=16, choices=ChurnModelStatus.choices, default=ChurnModelStatus.CANDIDATE
    )
    artifact = models.BinaryField(editable=False)
    sha256 = models.CharField(max_length=64, editable=False)
    sklearn_version = models.CharField(max_length=32, editable=False)
    feature_version = models.CharField(max_length=32, editable=False)
    feature_names = models.JSONField(default=list, editable=False)
    horizon_days = models.PositiveSmallIntegerField()
    train_window_start = models.DateTimeField()
    train_window_end = models.DateTimeField()
    validation_window_start = models.DateTimeField()
    validation_window_end = models.DateTimeField()
    trained_as_of = models.DateTimeField(help_text="No label horizon ends after this instant.")
    n_train = models.PositiveIntegerField()
    n_validation = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict)
    comparison = models.JSONField(
        default=dict, blank=True, help_text="Against the model active when this one was trained."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    load_error = models.TextField(blank=True, default="")
    load_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="churnmodel_unique_version"),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(status="active"),
                name="churnmodel_one_active_per_tenant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"


class ScoringRun(models.Model):
    """One batch rescore of a tenant for one schedule slot; unique so a slot runs once."""

    tenant = models.ForeignKey("churnapp.Tenant", on_delete=models.CASCADE, related_name="+")
    slot = models.DateTimeField(help_text="The schedule slot (start of the hour).")
    as_of = models.DateTimeField()
    model_version = models.CharField(max_length=64)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    leads_scored = models.PositiveIntegerField(default=0)
    tier_changes = models.PositiveIntegerField(default=0)
    agent_response_hours = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slot"], name="scoringrun_unique_slot")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}@{self.slot:%Y-%m-%d %H:%M}"


class ScoringChunkStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ScoringChunk(models.Model):
    """A range of lead ids of a run; a worker claims it before scoring it."""

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    first_lead_id = models.BigIntegerField()
    last_lead_id = models.BigIntegerField()
    status = models.CharField(
        max_length=16, choices=ScoringChunkStatus.choices, default=ScoringChunkStatus.PENDING
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    leads_scored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="scoringchunk_unique_index")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} chunk {self.index} ({self.status})"


class AssessmentKind(models.TextChoices):
    TIER_CHANGE = "tier_change"
    # A lead's risk history shows its `RiskSnapshot`s with this kind; since 0008 no
    # RiskAssessment row has it.
    DAILY = "daily"


class RiskAssessment(models.Model):
    """A tier change: the moment a lead's tier moved, with the reasons and the run."""

    tenant = models.ForeignKey("churnapp.Tenant", on_delete=models.CASCADE, related_name="+")
    # Indexed by riskassessment_lead_time (lead_id first): a lone lead_id index was one
    # more write per row and served no query.
    lead = models.ForeignKey(
        "churnapp.Lead", on_delete=models.CASCADE, related_name="risk_assessments", db_index=False
    )
    kind = models.CharField(max_length=16, choices=AssessmentKind.choices)
    assessed_at = models.DateTimeField()
    day = models.DateField()
    score = models.FloatField()
    tier = models.CharField(max_length=16)
    previous_tier = models.CharField(max_length=16)
    model_version = models.CharField(max_length=64)
    reasons = models.JSONField(default=list)
    run = models.ForeignKey(
        ScoringRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["lead", "-assessed_at"], name="riskassessment_lead_time")]

    def __str__(self) -> str:
        return f"{self.lead_id} {self.previous_tier}->{self.tier} {self.score:.2f}"


class RiskSnapshot(models.Model):
    """A lead's score once a day (the day's first score): its risk history between tier
    changes. The first run of each UTC day writes one per active lead, so the table is
    kept narrow and its only index is its key (lead, day), which the history reads and
    which makes a second snapshot of the same day impossible. Reasons stay with the
    lead's current score and its tier changes."""

    pk = models.CompositePrimaryKey("lead", "day")
    # No index of their own: the key leads with lead_id, and nothing reads by tenant
    # alone (tenant-scoped reads go through the lead). No database constraint either:
    # the only writer, scores_apply, takes each row from its UPDATE of the tenant's
    # locked lead rows, so both references hold by construction, and the per-row checks
    # were two thirds of the day's snapshot INSERT. Deletes cascade in the ORM as for
    # every other foreign key here. Fixed-width columns first, widest first: no padding.
    lead = models.ForeignKey(
        "churnapp.Lead",
        on_delete=models.CASCADE,
        related_name="risk_snapshots",
        db_index=False,
        db_constraint=False,
    )
    tenant = models.ForeignKey(
        "churnapp.Tenant",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    assessed_at = models.DateTimeField()
    score = models.FloatField()
    day = models.DateField()
    tier = models.CharField(max_length=16)
    model_version = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.lead_id} {self.day} {self.tier} {self.score:.2f}"


class InterventionOutcome(models.TextChoices):
    STARTED = "started"
    RE_ENGAGED = "re_engaged"
    CONVERTED = "converted"
    CHURNED = "churned"
    NO_RESPONSE = "no_response"
    UNSUBSCRIBED = "unsubscribed"
    CANCELLED = "cancelled"


class LeadInterventionEvent(models.Model):
    """Intervention history as churnapp sees it, written by the interventions app through
    `lead_intervention_record` so features can use it without importing that app."""

    tenant = models.ForeignKey("churnapp.Tenant", on_delete=models.CASCADE, related_name="+")
    lead = models.ForeignKey(
        "churnapp.Lead", on_delete=models.CASCADE, related_name="intervention_events"
    )
    stage = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=InterventionOutcome.choices)
    occurred_at = models.DateTimeField()
    key = models.CharField(max_length=200, help_text="Idempotency key from the caller.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="interventionevent_unique_key")
        ]
        indexes = [models.Index(fields=["lead", "occurred_at"], name="interventionevent_lead_time")]

    def __str__(self) -> str:
        return f"{self.lead_id} stage {self.stage} {self.outcome}"
