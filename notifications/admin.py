"""The managers' screens: messages and their attempts, dead letters, suppressions, config."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone

from churnapp.admin_scoping import TenantScopedAdmin
from notifications.models import (
    ChannelConfig,
    DeliveryAttempt,
    Message,
    MessageEvent,
    MessageStatus,
    PushSubscription,
    Suppression,
    Template,
)
from notifications.services.messages import message_enqueue_on_commit, message_status_set
from notifications.templating import sms_segments


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "status_code", "latency_ms", "outcome", "error", "worker"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class MessageEventInline(admin.TabularInline):
    model = MessageEvent
    extra = 0
    can_delete = False
    fields = ["received_at", "provider", "kind", "status", "event_id"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="Replay: queue again (dead, failed or unknown messages)")
def replay_messages(modeladmin, request, queryset):
    replayed = 0
    with transaction.atomic():
        for message in queryset.select_for_update(of=("self",)).filter(
            status__in=[MessageStatus.DEAD, MessageStatus.FAILED, MessageStatus.UNKNOWN]
        ):
            message_status_set(
                message=message,
                new_status=MessageStatus.QUEUED,
                reason=f"replayed by {request.user} at {timezone.now():%Y-%m-%d %H:%M}Z",
                fields={
                    "claim_token": None,
                    "next_attempt_at": None,
                    "not_before": None,
                    "max_attempts": message.attempts + message.max_attempts,
                },
            )
            message_enqueue_on_commit(message=message)
            replayed += 1
    modeladmin.message_user(request, f"{replayed} message(s) queued again.", messages.SUCCESS)


class DeadFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("dead", "Dead"), ("unknown", "Unknown outcome")]

    def queryset(self, request, queryset):
        if self.value() in ("dead", "unknown"):
            return queryset.filter(status=self.value())
        return queryset


@admin.register(Message)
class MessageAdmin(TenantScopedAdmin):
    list_display = [
        "id",
        "tenant",
        "channel",
        "recipient_display",
        "template_key",
        "variant",
        "status",
        "attempts",
        "created_at",
    ]
    list_filter = [DeadFilter, "status", "channel"]
    search_fields = ["idempotency_key", "provider_message_id", "to_address", "lead__external_id"]
    date_hierarchy = "created_at"
    actions = [replay_messages]
    inlines = [DeliveryAttemptInline, MessageEventInline]
    readonly_fields = [
        "tenant",
        "lead",
        "agent",
        "channel",
        "template",
        "template_key",
        "variant",
        "subject",
        "body_text",
        "body_html",
        "sms_segments_display",
        "links",
        "to_address",
        "idempotency_key",
        "status",
        "status_reason",
        "attempts",
        "max_attempts",
        "not_before",
        "next_attempt_at",
        "claimed_by",
        "claimed_at",
        "provider",
        "provider_message_id",
        "cost",
        "cost_currency",
        "metadata",
        "fallback_channels",
        "fallback_of",
        "parent",
        "sent_at",
        "delivered_at",
        "opened_at",
        "clicked_at",
        "replied_at",
        "created_at",
        "updated_at",
    ]
    exclude = ["claim_token", "render_context"]
    list_select_related = ["tenant", "lead", "agent"]

    @admin.display(description="recipient")
    def recipient_display(self, obj):
        return obj.to_address or str(obj.recipient)

    @admin.display(description="SMS segments")
    def sms_segments_display(self, obj):
        return str(sms_segments(obj.body_text)) if obj.channel == "sms" else "-"

    def has_add_permission(self, request):
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(TenantScopedAdmin):
    list_display = [
        "message",
        "number",
        "outcome",
        "status_code",
        "latency_ms",
        "started_at",
        "backend",
    ]
    list_filter = ["outcome"]
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Template)
class TemplateAdmin(TenantScopedAdmin):
    list_display = [
        "key",
        "variant",
        "channel",
        "tenant",
        "is_active",
        "sms_segments_display",
        "updated_at",
    ]
    list_filter = ["channel", "is_active"]
    search_fields = ["key"]
    readonly_fields = ["sms_segments_display"]

    @admin.display(description="SMS segments (sample)")
    def sms_segments_display(self, obj):
        if obj.channel != "sms" or not obj.pk:
            return "-"
        from notifications.templating import render_text, sample_context

        try:
            text = render_text(
                obj.body_text, {**sample_context(tenant=obj.tenant), **obj.sample_context}
            )
        except Exception as exc:  # shown to the author, not raised
            return f"cannot render: {exc}"
        return str(sms_segments(text))


@admin.register(Suppression)
class SuppressionAdmin(TenantScopedAdmin):
    list_display = ["address", "channel", "reason", "tenant", "created_at", "lifted_at"]
    list_filter = ["channel", "reason"]
    search_fields = ["address", "note"]


@admin.register(ChannelConfig)
class ChannelConfigAdmin(TenantScopedAdmin):
    list_display = ["tenant", "channel", "backend", "is_active"]
    list_filter = ["channel"]


@admin.register(PushSubscription)
class PushSubscriptionAdmin(TenantScopedAdmin):
    list_display = ["endpoint", "agent", "lead", "is_active", "last_success_at"]
    list_filter = ["is_active"]


@admin.register(MessageEvent)
class MessageEventAdmin(TenantScopedAdmin):
    list_display = ["received_at", "provider", "kind", "status", "message"]
    list_filter = ["provider", "kind"]
    readonly_fields = [f.name for f in MessageEvent._meta.fields]
