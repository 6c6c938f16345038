"""Admin: lead and intervention timelines (read-only log), retention settings, rollups, exports."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from churnapp.admin_scoping import TenantScopedAdmin
from interventions.models import Intervention
from notifications.models import Message
from tracking.exports import admin_export_action
from tracking.models import (
    EscalationDailyRollup,
    InterventionDailyRollup,
    MessageDailyRollup,
    TrackingEvent,
    TrackingSettings,
)


def lead_timeline_url(lead_id: int) -> str:
    """The admin page listing one lead's lifecycle events, oldest first."""
    return f"{reverse('admin:tracking_trackingevent_changelist')}?lead_id={lead_id}&o=1"


class ReadOnlyAdmin(TenantScopedAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TrackingEvent)
class TrackingEventAdmin(ReadOnlyAdmin):
    """The lifecycle log. Filter one lead with ?lead_id=N (the lead timeline) or one
    intervention with ?intervention_id=N; search takes an exact lead or intervention id."""

    list_display = [
        "id",
        "occurred_at",
        "kind",
        "lead_link",
        "intervention_id",
        "message_id",
        "escalation_id",
        "stage",
        "channel",
        "data",
    ]
    list_filter = ["kind", "stage", "channel"]
    search_fields = ["=lead_id", "=intervention_id"]
    ordering = ["id"]
    actions = [admin_export_action("events")]
    show_full_result_count = False

    @admin.display(description="lead")
    def lead_link(self, obj: TrackingEvent):
        if obj.lead_id is None:
            return "-"
        return format_html(
            '<a href="{}">{} timeline</a>', lead_timeline_url(obj.lead_id), obj.lead_id
        )

    def lookup_allowed(self, lookup, value, request=None):
        if lookup in ("lead_id", "intervention_id"):
            return True
        return super().lookup_allowed(lookup, value, request)


@admin.register(TrackingSettings)
class TrackingSettingsAdmin(TenantScopedAdmin):
    list_display = ["tenant", "retention_days"]


class RollupAdmin(ReadOnlyAdmin):
    date_hierarchy = "day"
    ordering = ["-day"]


@admin.register(InterventionDailyRollup)
class InterventionDailyRollupAdmin(RollupAdmin):
    list_display = [
        "day",
        "stage",
        "channel",
        "variant",
        "source",
        "price_band",
        "tier_at_start",
        "is_holdout",
        "started",
        "resolved",
        "successes",
        "episodes_ended",
        "episodes_saved",
    ]
    list_filter = ["stage", "is_holdout", "channel", "price_band", "tier_at_start"]
    actions = [admin_export_action("intervention-rollups")]


@admin.register(MessageDailyRollup)
class MessageDailyRollupAdmin(RollupAdmin):
    list_display = [
        "day",
        "channel",
        "provider",
        "stage",
        "variant",
        "created",
        "sent",
        "delivered",
        "opened_or_clicked",
        "replied",
        "failed",
        "cost",
    ]
    list_filter = ["channel", "provider", "stage"]
    actions = [admin_export_action("message-rollups")]


@admin.register(EscalationDailyRollup)
class EscalationDailyRollupAdmin(RollupAdmin):
    list_display = ["day", "opened", "acknowledged", "resolved", "breached"]
    actions = [admin_export_action("escalation-rollups")]


def _add_export_action(model, name: str) -> None:
    """Give a lower app's admin (registered before ours) a CSV export action."""
    model_admin = admin.site._registry.get(model)
    if model_admin is None:
        return
    action = admin_export_action(name)
    existing = list(model_admin.actions or [])
    if not any(getattr(a, "__name__", a) == action.__name__ for a in existing):
        model_admin.actions = [*existing, action]


_add_export_action(Intervention, "interventions")
_add_export_action(Message, "messages")
