"""The lifecycle log, per-tenant tracking settings and the daily rollups analytics read."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from churnapp.models import Tenant


class EventKind(models.TextChoices):
    INTERVENTION_STARTED = "intervention_started"
    INTERVENTION_ACTIVATED = "intervention_activated"
    INTERVENTION_ENGAGED = "intervention_engaged"
    OUTCOME_RECORDED = "outcome_recorded"
    STEP_SKIPPED = "step_skipped"
    MESSAGE_QUEUED = "message_queued"
    MESSAGE_SENDING = "message_sending"
    MESSAGE_SENT = "message_sent"
    MESSAGE_DELIVERED = "message_delivered"
    MESSAGE_FAILED = "message_failed"
    MESSAGE_BOUNCED = "message_bounced"
    MESSAGE_SUPPRESSED = "message_suppressed"
    MESSAGE_UNKNOWN = "message_unknown"
    MESSAGE_DEAD = "message_dead"
    MESSAGE_CANCELLED = "message_cancelled"
    MESSAGE_OPENED = "message_opened"
    MESSAGE_CLICKED = "message_clicked"
    MESSAGE_REPLIED = "message_replied"
    OPTED_OUT = "opted_out"
    ESCALATED = "escalated"
    ESCALATION_ACKNOWLEDGED = "escalation_acknowledged"
    ESCALATION_RESOLVED = "escalation_resolved"
    ESCALATION_SLA_BREACHED = "escalation_sla_breached"
    TIER_CHANGED = "tier_changed"


class TrackingEvent(models.Model):
    """One transition, appended in the transaction that made it; the id is the cursor."""

    id = models.BigAutoField(primary_key=True)
    # No single-column tenant index: trk_event_tenant_id (tenant, id) leads with it, and
    # every lifecycle event (several per message) writes each index.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    # Plain ids, not foreign keys: the log outlives and never locks the rows it describes.
    lead_id = models.BigIntegerField(null=True, blank=True)
    intervention_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    escalation_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    stage = models.PositiveSmallIntegerField(null=True, blank=True)
    channel = models.CharField(max_length=16, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "id"], name="trk_event_tenant_id"),
            models.Index(fields=["intervention_id", "id"], name="trk_event_intervention_id"),
            models.Index(fields=["lead_id", "id"], name="trk_event_lead_id"),
            models.Index(fields=["tenant", "occurred_at"], name="trk_event_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.kind}"


class TrackingSettings(models.Model):
    """A tenant's tracking options: how long raw lifecycle rows are kept."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="+")
    retention_days = models.PositiveIntegerField(
        default=180, help_text="Raw lifecycle events older than this are purged; rollups stay."
    )

    class Meta:
        verbose_name_plural = "tracking settings"

    def __str__(self) -> str:
        return f"{self.tenant}: keep events {self.retention_days} days"


class RollupDay(models.Model):
    """Marks a (tenant, UTC day) whose rollup rows analytics may read.

    `through` NULL: the rows cover the whole day (the nightly rollup). Otherwise the day
    is still running and its rows cover the facts timed before `through` (the intraday
    refresh); analytics read those rows and the live tables from `through` on."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    rolled_at = models.DateTimeField()
    through = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day"], name="trk_rollupday_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"


class InterventionDailyRollup(models.Model):
    """Interventions of one tenant and UTC day in one segment: started that day, resolved
    that day (by outcome), episodes ended that day, and latency histograms."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    stage = models.PositiveSmallIntegerField()
    channel = models.CharField(max_length=16, blank=True, default="")
    variant = models.CharField(max_length=16, blank=True, default="")
    source = models.CharField(max_length=64, blank=True, default="")
    price_band = models.CharField(max_length=16, blank=True, default="")
    pipeline_stage = models.CharField(max_length=64, blank=True, default="")
    tier_at_start = models.CharField(max_length=16, blank=True, default="")
    is_holdout = models.BooleanField()
    started = models.IntegerField(default=0)
    resolved = models.IntegerField(default=0)
    successes = models.IntegerField(default=0)
    re_engaged = models.IntegerField(default=0)
    converted = models.IntegerField(default=0)
    churned = models.IntegerField(default=0)
    no_response = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    episodes_ended = models.IntegerField(default=0)
    episodes_saved = models.IntegerField(default=0)
    # Histograms over tracking.stats.LATENCY_EDGES_SECONDS (one more bucket than edges).
    first_send_hist = ArrayField(models.IntegerField(), default=list)
    resolution_hist = ArrayField(models.IntegerField(), default=list)

    class Meta:
        indexes = [models.Index(fields=["tenant", "day"], name="trk_ivroll_tenant_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} stage {self.stage}"


class InterventionDailyBreakdown(models.Model):
    """The same day's counts per single breakdown (overall, stage, channel, stage+variant,
    a segment, stage+channel) and arm: what analytics sum, a few dozen rows a day
    instead of every combination of dimensions."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    dimension = models.CharField(max_length=16)
    stage = models.PositiveSmallIntegerField(null=True, blank=True)
    value = models.CharField(max_length=64, blank=True, default="")
    is_holdout = models.BooleanField()
    started = models.IntegerField(default=0)
    resolved = models.IntegerField(default=0)
    successes = models.IntegerField(default=0)
    re_engaged = models.IntegerField(default=0)
    converted = models.IntegerField(default=0)
    churned = models.IntegerField(default=0)
    no_response = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    episodes_ended = models.IntegerField(default=0)
    episodes_saved = models.IntegerField(default=0)
    first_send_hist = ArrayField(models.IntegerField(), default=list)
    resolution_hist = ArrayField(models.IntegerField(), default=list)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "day", "dimension"], name="trk_ivbreak_tenant_day")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.dimension}={self.value}"


class MessageDailyRollup(models.Model):
    """Messages of one tenant created on one UTC day, per channel, provider, stage, variant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    channel = models.CharField(max_length=16)
    provider = models.CharField(max_length=32, blank=True, default="")
    stage = models.PositiveSmallIntegerField(help_text="0 for messages outside interventions.")
    variant = models.CharField(max_length=16, blank=True, default="")
    created = models.IntegerField(default=0)
    sent = models.IntegerField(default=0)
    delivered = models.IntegerField(default=0)
    opened_or_clicked = models.IntegerField(default=0)
    replied = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    suppressed = models.IntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=5, default=0)
    cost_reported = models.IntegerField(
        default=0, help_text="Sent messages whose cost the provider reported."
    )
    cost_estimated = models.IntegerField(
        default=0, help_text="Sent messages costed from TRACKING_MESSAGE_COSTS."
    )
    delivery_hist = ArrayField(models.IntegerField(), default=list)

    class Meta:
        indexes = [models.Index(fields=["tenant", "day"], name="trk_msgroll_tenant_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.channel}"


class EscalationDailyRollup(models.Model):
    """Escalations of one tenant on one UTC day: opened, acknowledged, resolved, breached."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    opened = models.IntegerField(default=0)
    acknowledged = models.IntegerField(default=0)
    resolved = models.IntegerField(default=0)
    breached = models.IntegerField(default=0)
    acknowledge_hist = ArrayField(models.IntegerField(), default=list)
    resolve_hist = ArrayField(models.IntegerField(), default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day"], name="trk_escroll_unique_day")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"
