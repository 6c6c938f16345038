"""Tenants, agents, API keys, leads and their activity: the bottom of the stack."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import JSONField, Q, Value


class Tenant(models.Model):
    """A brokerage. Every other row in the system belongs to exactly one tenant."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    ghl_location_id = models.CharField(max_length=64, blank=True, default="")
    timezone = models.CharField(max_length=64, default="America/New_York")
    currency = models.CharField(max_length=3, default="USD")
    saved_lead_value = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("3000.00"),
        help_text="What one lead kept from churning is worth to the brokerage.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ghl_location_id"],
                condition=~Q(ghl_location_id=""),
                name="tenant_unique_ghl_location",
            )
        ]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A tenant's API key. Only a SHA-256 of the secret is stored; the key is shown once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.prefix} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AgentRole(models.TextChoices):
    AGENT = "agent", "Agent"
    MANAGER = "manager", "Manager"


class Agent(models.Model):
    """A person of the brokerage: an agent who owns leads or a manager who handles escalations."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="agent",
    )
    name = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=AgentRole.choices, default=AgentRole.AGENT)
    email = models.EmailField(blank=True, default="")
    phone = models.CharField(max_length=20, blank=True, default="", help_text="E.164")
    ghl_user_id = models.CharField(max_length=64, blank=True, default="")
    manager = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="team",
        limit_choices_to={"role": "manager"},
        help_text="Who takes this agent's escalations (else round robin among managers).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "ghl_user_id"],
                condition=~Q(ghl_user_id=""),
                name="agent_unique_ghl_user_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_role_display()})"


class LeadStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CONVERTED = "converted", "Converted"
    LOST = "lost", "Lost"


class RiskTier(models.TextChoices):
    """Churn risk tiers, lowest first. Thresholds per tenant live in one table (scoring)."""

    UNSCORED = "unscored", "Unscored"
    LOW = "low", "Low"
    EARLY_WARNING = "early_warning", "Early warning"
    ACTIVE_RISK = "active_risk", "Active risk"
    CRITICAL = "critical", "Critical"

    @classmethod
    def rank(cls, tier: str) -> int:
        return [c.value for c in cls].index(tier)


class Lead(models.Model):
    """A person the brokerage wants to keep warm, mirrored from the CRM."""

    # No single-column index: every lead query is tenant-scoped, and the composite
    # indexes below all lead with tenant_id (each index is one more write per lead update).
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="leads", db_index=False
    )
    external_id = models.CharField(max_length=128, help_text="The CRM's id (GHL contact id).")
    first_name = models.CharField(max_length=100, blank=True, default="")
    last_name = models.CharField(max_length=100, blank=True, default="")
    email = models.EmailField(blank=True, default="")
    phone = models.CharField(max_length=20, blank=True, default="", help_text="E.164")
    timezone = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=64, blank=True, default="")
    pipeline_stage = models.CharField(max_length=64, blank=True, default="")
    budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    status = models.CharField(max_length=16, choices=LeadStatus.choices, default=LeadStatus.ACTIVE)
    assigned_agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="leads"
    )
    # Consent and do-not-disturb, per channel. `dnd` is GHL's global switch; dnd_channels
    # lists the channels (sms, email, call, whatsapp, ...) GHL's dndSettings mark active.
    consent_sms = models.BooleanField(default=True)
    consent_email = models.BooleanField(default=True)
    dnd = models.BooleanField(default=False)
    dnd_channels = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    custom_fields = models.JSONField(default=dict, blank=True)

    crm_created_at = models.DateTimeField(null=True, blank=True)
    # When the CRM changed the contact, as of the newest contact event applied: an older
    # event arriving later (webhooks come out of order) is not applied over it.
    crm_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted in the CRM.")
    last_activity_at = models.DateTimeField(null=True, blank=True)
    last_inbound_at = models.DateTimeField(null=True, blank=True)

    risk_score = models.FloatField(null=True, blank=True)
    risk_tier = models.CharField(
        max_length=16, choices=RiskTier.choices, default=RiskTier.UNSCORED
    )  # indexed with its tenant (lead_tenant_tier): no query reads tiers across tenants
    risk_scored_at = models.DateTimeField(null=True, blank=True)
    # Written with the score by scoring: the top factors behind it and who produced it.
    # Database defaults too, so bulk SQL inserts of leads elsewhere need not name them.
    risk_reasons = models.JSONField(default=list, db_default=Value([], JSONField()), blank=True)
    risk_model_version = models.CharField(max_length=64, blank=True, default="", db_default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"], name="lead_unique_external_id"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "risk_tier"], name="lead_tenant_tier"),
            models.Index(fields=["tenant", "status"], name="lead_tenant_status"),
            models.Index(fields=["tenant", "id"], name="lead_tenant_id"),
        ]

    def __str__(self) -> str:
        return self.full_name or self.external_id

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class ActivityKind(models.TextChoices):
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    EMAIL_REPLY = "email_reply"
    EMAIL_OUTBOUND = "email_outbound"
    SMS_INBOUND = "sms_inbound"
    SMS_OUTBOUND = "sms_outbound"
    CALL_INBOUND = "call_inbound"
    CALL_OUTBOUND = "call_outbound"
    WEBSITE_VISIT = "website_visit"
    PROPERTY_VIEW = "property_view"
    FORM_SUBMIT = "form_submit"
    APPOINTMENT_BOOKED = "appointment_booked"
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    SHOWING_ATTENDED = "showing_attended"
    OPPORTUNITY_WON = "opportunity_won"
    OPPORTUNITY_LOST = "opportunity_lost"


class Direction(models.TextChoices):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NONE = "none"


# The direction every kind implies; the API accepts a direction only when it agrees.
KIND_DIRECTION: dict[str, str] = {
    ActivityKind.EMAIL_OPEN: Direction.INBOUND,
    ActivityKind.EMAIL_CLICK: Direction.INBOUND,
    ActivityKind.EMAIL_REPLY: Direction.INBOUND,
    ActivityKind.EMAIL_OUTBOUND: Direction.OUTBOUND,
    ActivityKind.SMS_INBOUND: Direction.INBOUND,
    ActivityKind.SMS_OUTBOUND: Direction.OUTBOUND,
    ActivityKind.CALL_INBOUND: Direction.INBOUND,
    ActivityKind.CALL_OUTBOUND: Direction.OUTBOUND,
    ActivityKind.WEBSITE_VISIT: Direction.INBOUND,
    ActivityKind.PROPERTY_VIEW: Direction.INBOUND,
    ActivityKind.FORM_SUBMIT: Direction.INBOUND,
    ActivityKind.APPOINTMENT_BOOKED: Direction.INBOUND,
    ActivityKind.APPOINTMENT_CANCELLED: Direction.INBOUND,
    ActivityKind.SHOWING_ATTENDED: Direction.INBOUND,
    ActivityKind.OPPORTUNITY_WON: Direction.NONE,
    ActivityKind.OPPORTUNITY_LOST: Direction.NONE,
}

KIND_CHANNEL: dict[str, str] = {
    ActivityKind.EMAIL_OPEN: "email",
    ActivityKind.EMAIL_CLICK: "email",
    ActivityKind.EMAIL_REPLY: "email",
    ActivityKind.EMAIL_OUTBOUND: "email",
    ActivityKind.SMS_INBOUND: "sms",
    ActivityKind.SMS_OUTBOUND: "sms",
    ActivityKind.CALL_INBOUND: "call",
    ActivityKind.CALL_OUTBOUND: "call",
    ActivityKind.WEBSITE_VISIT: "web",
    ActivityKind.PROPERTY_VIEW: "web",
    ActivityKind.FORM_SUBMIT: "web",
    ActivityKind.APPOINTMENT_BOOKED: "crm",
    ActivityKind.APPOINTMENT_CANCELLED: "crm",
    ActivityKind.SHOWING_ATTENDED: "crm",
    ActivityKind.OPPORTUNITY_WON: "crm",
    ActivityKind.OPPORTUNITY_LOST: "crm",
}


class LeadActivity(models.Model):
    """One thing a lead did or that was done to them, deduplicated on the source event id."""

    # No single-column indexes on the keys: activity_tenant_time, the source event
    # constraint and activity_lead_time lead with them and answer every lookup (and the
    # cascades), and each extra index is one more B-tree insert per ingested row.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="activities", db_index=False
    )
    kind = models.CharField(max_length=32, choices=ActivityKind.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    channel = models.CharField(max_length=16)
    occurred_at = models.DateTimeField()
    source_event_id = models.CharField(max_length=200)
    value = models.FloatField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "lead activities"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "source_event_id"], name="activity_unique_source_event"
            )
        ]
        indexes = [
            # Per-lead time windows (features, timelines) read this index only.
            models.Index(
                fields=["lead", "occurred_at"], name="activity_lead_time", include=["kind"]
            ),
            models.Index(fields=["tenant", "occurred_at"], name="activity_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class WebhookStatus(models.TextChoices):
    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class WebhookEvent(models.Model):
    """A verified inbound webhook, stored before it is processed (the inbox)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_events")
    provider = models.CharField(max_length=16, default="ghl")
    webhook_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    signature_scheme = models.CharField(max_length=16)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=WebhookStatus.choices, default=WebhookStatus.RECEIVED
    )
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            # Per tenant: a delivery id seen in another tenant is not this tenant's
            # duplicate (and its stored event is never answered to this caller).
            models.UniqueConstraint(
                fields=["tenant", "provider", "webhook_id"], name="webhook_unique_tenant_id"
            )
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="webhook_status_time")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.event_type}:{self.webhook_id}"


# Risk scoring tables live in their own module; importing them here registers them.
from churnapp.models_risk import *  # noqa: E402, F401, F403
