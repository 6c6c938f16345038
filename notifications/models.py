"""The outbox (Message), its attempts and events, templates, suppressions and channel settings."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from churnapp.models import Agent, Lead, Tenant


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    AGENT_ALERT = "agent_alert", "Agent alert"
    IN_APP = "in_app", "In-app"
    PUSH = "push", "Web push"
    GHL_WORKFLOW = "ghl_workflow", "GHL workflow"
    GHL_TASK = "ghl_task", "GHL task"


# The Celery queue of each channel family.
CHANNEL_QUEUE: dict[str, str] = {
    Channel.SMS: "sms",
    Channel.EMAIL: "email",
    Channel.GHL_WORKFLOW: "crm",
    Channel.GHL_TASK: "crm",
    Channel.AGENT_ALERT: "realtime",
    Channel.PUSH: "realtime",
    Channel.IN_APP: "realtime",
}


class MessageStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    REPLIED = "replied"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"
    DEAD = "dead"
    CANCELLED = "cancelled"


class Template(models.Model):
    """A message template per tenant, channel, key and variant (Django template language)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    key = models.SlugField(
        max_length=100, help_text="What the caller asks for, e.g. stage1_checkin"
    )
    variant = models.CharField(max_length=16, default="A")
    subject = models.CharField(max_length=255, blank=True, default="")
    body_text = models.TextField(help_text="SMS text, email text part, alert/task/push body.")
    body_html = models.TextField(blank=True, default="", help_text="Email HTML part.")
    sample_context = models.JSONField(
        default=dict,
        blank=True,
        help_text="Extra sample variables the template may use (checked on save).",
    )
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "channel", "key", "variant"], name="template_unique_variant"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key}/{self.variant} ({self.channel})"

    def clean(self) -> None:
        from notifications.templating import template_check

        template_check(template=self)


class Message(models.Model):
    """One message to one recipient over one channel: the outbox row."""

    # Indexes: a message's status moves three or four times (queued, sending, sent,
    # delivered...) and a status move is never a HOT update, so each move writes every
    # index that holds the row. The foreign keys' lookups are served by the composite
    # indexes below (tenant, lead) or by partial ones holding only the rows that have
    # the key (agent, template, fallback_of, parent); see Meta.indexes.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=False
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    template = models.ForeignKey(
        Template,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    template_key = models.CharField(max_length=100, blank=True, default="")
    variant = models.CharField(max_length=16, blank=True, default="")
    subject = models.CharField(max_length=255, blank=True, default="")
    body_text = models.TextField(blank=True, default="")
    body_html = models.TextField(blank=True, default="")
    # Every URL the rendered message contains: the click redirect goes only to these.
    links = models.JSONField(default=list, blank=True)
    to_address = models.CharField(max_length=320, blank=True, default="")
    idempotency_key = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    status_reason = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    not_before = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=32, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    cost = models.DecimalField(max_digits=10, decimal_places=5, null=True, blank=True)
    cost_currency = models.CharField(max_length=3, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # The caller's context (JSON-safe copy), to render a fallback channel's template.
    render_context = models.JSONField(default=dict, blank=True)
    fallback_channels = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    fallback_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="fallbacks",
        db_index=False,
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="companions",
        help_text="The agent alert this SMS/email companion belongs to.",
        db_index=False,
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="message_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(lead__isnull=False) | Q(agent__isnull=False),
                name="message_has_recipient",
            ),
        ]
        indexes = [
            # The outbox's working set: rows still to send or to look after (the sweep,
            # the queue gauges, the dead letters). A row that reaches a final status
            # leaves it, so it stays small however long the table grows.
            models.Index(
                fields=["status", "next_attempt_at"],
                name="message_open_status",
                condition=Q(status__in=["queued", "sending", "unknown", "dead"]),
            ),
            # A send batch's claim: the lowest-id queued rows of one tenant and channel,
            # read in order without stepping over other tenants' or sent rows.
            models.Index(
                fields=["tenant", "channel", "id"],
                name="message_queued_claim",
                condition=Q(status="queued"),
            ),
            # Provider callbacks find their message by the provider's id, once it has one.
            models.Index(
                fields=["provider", "provider_message_id"],
                name="message_provider_msg",
                condition=~Q(provider_message_id=""),
            ),
            models.Index(fields=["lead", "channel", "created_at"], name="message_lead_channel"),
            # Analytics over a period (tracking) read messages by tenant and creation time.
            models.Index(fields=["tenant", "created_at"], name="message_tenant_created"),
            # Foreign keys held by few rows: deletes of the referenced row find them here.
            models.Index(fields=["agent"], name="message_agent", condition=Q(agent__isnull=False)),
            models.Index(
                fields=["template"], name="message_template", condition=Q(template__isnull=False)
            ),
            models.Index(
                fields=["fallback_of"],
                name="message_fallback_of",
                condition=Q(fallback_of__isnull=False),
            ),
            models.Index(
                fields=["parent"], name="message_parent", condition=Q(parent__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel} {self.status}"

    @property
    def recipient(self) -> Lead | Agent:
        return self.lead if self.lead_id else self.agent


class AttemptOutcome(models.TextChoices):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"


class DeliveryAttempt(models.Model):
    """One provider call for a message: what was answered, how long it took, what failed."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    backend = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    error = models.TextField(blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="attempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of #{self.message_id}: {self.outcome}"


class MessageEventKind(models.TextChoices):
    STATUS = "status"
    OPENED = "opened"
    CLICKED = "clicked"
    REPLIED = "replied"
    INBOUND = "inbound"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


class MessageEvent(models.Model):
    """A provider callback or engagement event, stored once (duplicates are ignored)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    provider = models.CharField(max_length=32)
    event_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=MessageEventKind.choices)
    status = models.CharField(max_length=32, blank=True, default="")
    occurred_at = models.DateTimeField()
    payload = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "event_id"], name="message_event_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.kind}:{self.status}"


class SuppressionReason(models.TextChoices):
    OPT_OUT_KEYWORD = "opt_out_keyword", "Replied with an opt-out keyword"
    GHL_DND = "ghl_dnd", "Do-not-disturb in GHL"
    NO_CONSENT = "no_consent", "No consent on the lead"
    BOUNCE = "bounce", "Email bounced"
    COMPLAINT = "complaint", "Spam complaint"
    UNSUBSCRIBE = "unsubscribe", "Unsubscribe link"
    PROVIDER_OPT_OUT = "provider_opt_out", "Provider reports the recipient opted out"
    MANUAL = "manual", "Manual entry"


class Suppression(models.Model):
    """An address that must not receive a channel. Lifting keeps the row for the record."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(
        max_length=320, help_text="E.164 phone, lower-case email, or lead:<id>/agent:<id>."
    )
    lead = models.ForeignKey(
        Lead, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=32, choices=SuppressionReason.choices)
    note = models.TextField(blank=True, default="")
    source = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_reason = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "channel", "address"],
                condition=Q(lifted_at__isnull=True),
                name="suppression_unique_active",
            )
        ]
        indexes = [models.Index(fields=["tenant", "channel", "address"], name="suppression_addr")]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address} ({self.reason})"


class ChannelConfig(models.Model):
    """A tenant's backend for one channel and its options (from numbers, workflow ids, ...)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    backend = models.CharField(
        max_length=200, blank=True, default="", help_text="Dotted path; empty = settings default."
    )
    options = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "channel"], name="channel_config_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.channel} -> {self.backend or 'default'}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError
        from django.utils.module_loading import import_string

        if self.backend:
            try:
                import_string(self.backend)
            except ImportError as exc:
                raise ValidationError(
                    {"backend": f"cannot import {self.backend!r}: {exc}"}
                ) from exc
        if not isinstance(self.options, dict):
            raise ValidationError({"options": "options must be a JSON object"})


class PushSubscription(models.Model):
    """A browser's Web Push subscription, registered by the dashboard."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    endpoint = models.URLField(max_length=1000)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    user_agent = models.CharField(max_length=300, blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "endpoint"], name="push_unique_endpoint"),
            models.CheckConstraint(
                condition=Q(lead__isnull=False) | Q(agent__isnull=False),
                name="push_has_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.endpoint[:80]
