"""Managers' screens: the escalation queue, interventions, policies and variants."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from churnapp.admin_scoping import TenantScopedAdmin
from churnapp.exceptions import ConflictError
from interventions.models import (
    Escalation,
    EscalationStatus,
    Intervention,
    InterventionPolicy,
    InterventionStep,
    MessageVariant,
    StagePolicy,
)
from interventions.services.escalations import escalation_acknowledge, escalation_resolve
from interventions.services.policy import policy_publish, stage_plan_validate


def _agent(request):
    return getattr(request.user, "agent", None)


@admin.register(Escalation)
class EscalationAdmin(TenantScopedAdmin):
    list_display = ["lead", "manager", "status", "opened_at", "sla_due_at", "time_left", "breached"]
    list_filter = ["status", "manager"]
    ordering = ["sla_due_at"]
    search_fields = ["lead__external_id", "lead__first_name", "lead__last_name", "lead__email"]
    readonly_fields = [
        "intervention",
        "lead",
        "opened_at",
        "sla_due_at",
        "acknowledged_at",
        "resolved_at",
        "breached_at",
        "status",
    ]
    fields = [
        "lead",
        "intervention",
        "manager",
        "status",
        "opened_at",
        "sla_due_at",
        "acknowledged_at",
        "resolved_at",
        "breached_at",
        "notes",
    ]
    actions = ["acknowledge", "resolve"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("lead", "manager")
        # The queue: unresolved first, soonest deadline first.
        return queryset.order_by("resolved_at", "sla_due_at")

    @admin.display(description="SLA left")
    def time_left(self, obj: Escalation) -> str:
        if obj.status == EscalationStatus.RESOLVED:
            return "—"
        seconds = (obj.sla_due_at - timezone.now()).total_seconds()
        sign = "" if seconds >= 0 else "overdue "
        seconds = abs(int(seconds))
        text = f"{sign}{seconds // 3600}h {seconds % 3600 // 60:02d}m"
        return format_html('<span style="color:{}">{}</span>', "#b00" if sign else "inherit", text)

    @admin.display(boolean=True, description="SLA breached")
    def breached(self, obj: Escalation) -> bool:
        return obj.breached_at is not None

    def has_add_permission(self, request):
        return False

    @admin.action(description="Acknowledge selected escalations")
    def acknowledge(self, request, queryset):
        self._apply(request, queryset, escalation_acknowledge, "acknowledged")

    @admin.action(description="Resolve selected escalations")
    def resolve(self, request, queryset):
        self._apply(request, queryset, escalation_resolve, "resolved")

    def _apply(self, request, queryset, service, word):
        done = 0
        for escalation in queryset:
            try:
                service(escalation=escalation, by=_agent(request))
                done += 1
            except ConflictError as err:
                self.message_user(request, f"{escalation}: {err.message}", messages.WARNING)
        self.message_user(request, f"{done} escalation(s) {word}.")


class StepInline(admin.TabularInline):
    model = InterventionStep
    extra = 0
    can_delete = False
    fields = ["position", "channel", "recipient", "status", "skip_reason", "message", "not_before"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Intervention)
class InterventionAdmin(TenantScopedAdmin):
    list_display = [
        "id",
        "lead",
        "episode",
        "stage",
        "status",
        "outcome",
        "is_holdout",
        "variant",
        "planned_at",
        "window_ends_at",
    ]
    list_filter = ["stage", "status", "outcome", "is_holdout", "variant__key"]
    search_fields = ["lead__external_id", "lead__email", "lead__first_name", "lead__last_name"]
    date_hierarchy = "planned_at"
    inlines = [StepInline]
    list_select_related = ["lead", "variant"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


class StagePolicyInline(admin.StackedInline):
    model = StagePolicy
    extra = 0
    max_num = 3

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        base_clean = formset.form.clean

        def clean(form):
            cleaned = base_clean(form)
            problems = stage_plan_validate(form.cleaned_data.get("channel_plan"))
            if problems:
                from django.core.exceptions import ValidationError

                raise ValidationError({"channel_plan": problems})
            return cleaned

        formset.form.clean = clean
        return formset


@admin.register(InterventionPolicy)
class InterventionPolicyAdmin(TenantScopedAdmin):
    list_display = [
        "tenant",
        "version",
        "is_active",
        "holdout_percent",
        "cap_per_day",
        "cap_per_week",
        "quiet_hours_start",
        "quiet_hours_end",
        "variant_mode",
    ]
    list_filter = ["is_active"]
    inlines = [StagePolicyInline]
    readonly_fields = ["version", "created_at"]

    def save_model(self, request, obj, form, change):
        """A change publishes a new version (policy_publish, the one way versions are made);
        interventions keep the version they ran under. ``obj`` becomes the new version, so
        the stage inlines saved next land on it (save_formset)."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        changes = {name: getattr(obj, name) for name in form.changed_data}
        new = policy_publish(policy=obj, changes=changes)
        obj.pk, obj.version, obj.is_active, obj.created_at = (
            new.pk,
            new.version,
            new.is_active,
            new.created_at,
        )
        self.message_user(request, f"Published policy version {new.version}.")

    def save_formset(self, request, form, formset, change):
        instances = formset.save(commit=False)
        for instance in instances:
            if instance.policy_id != form.instance.pk:
                instance.policy = form.instance
            existing = StagePolicy.objects.filter(
                policy=form.instance, stage=instance.stage
            ).first()
            if existing is not None and existing.pk != instance.pk:
                instance.pk = existing.pk
            instance.save()


@admin.register(MessageVariant)
class MessageVariantAdmin(TenantScopedAdmin):
    list_display = [
        "stage",
        "key",
        "description",
        "is_active",
        "weight",
        "trials",
        "successes",
        "rate",
    ]
    list_filter = ["stage", "is_active"]

    @admin.display(description="Success rate")
    def rate(self, obj: MessageVariant) -> str:
        return "—" if obj.success_rate is None else f"{obj.success_rate:.0%}"
