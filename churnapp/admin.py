"""The managers' screens for tenants, agents, API keys, leads, activities and webhooks.
Every tenant-owned admin inherits TenantScopedAdmin: a manager sees only their tenant."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.forms.models import BaseInlineFormSet

from churnapp.admin_scoping import TenantScopedAdmin, admin_tenant
from churnapp.models import Agent, ApiKey, Lead, LeadActivity, Tenant, WebhookEvent
from churnapp.normalize import phone_to_e164, timezone_check
from churnapp.services.api_keys import api_key_create, api_key_revoke
from churnapp.services.webhooks import webhook_event_reprocess

TIMELINE_LIMIT = 50


def _field_check(form: forms.ModelForm, name: str, check) -> None:
    value = form.cleaned_data.get(name)
    if value:
        try:
            form.cleaned_data[name] = check(value)
        except ValueError as exc:
            form.add_error(name, str(exc))


class TenantForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        _field_check(self, "timezone", timezone_check)
        return cleaned


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """Superusers onboard and remove tenants; a manager sees and edits only their own."""

    form = TenantForm
    list_display = ("name", "slug", "timezone", "ghl_location_id", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "ghl_location_id")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        tenant = admin_tenant(request)
        return queryset.filter(pk=tenant.pk) if tenant else queryset.none()

    def get_readonly_fields(self, request, obj=None):
        if request.user.is_superuser:
            return ()
        return ("slug", "ghl_location_id", "is_active", "created_at")

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_module_permission(self, request):
        if not request.user.is_superuser and admin_tenant(request) is None:
            return False
        return super().has_module_permission(request)


class AgentForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        _field_check(self, "phone", phone_to_e164)
        return cleaned


@admin.register(Agent)
class AgentAdmin(TenantScopedAdmin):
    form = AgentForm
    list_display = (
        "name",
        "role",
        "manager",
        "email",
        "phone",
        "ghl_user_id",
        "is_active",
        "tenant",
    )
    list_filter = ("role", "is_active")
    search_fields = ("name", "email", "ghl_user_id")
    list_select_related = ("tenant",)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            # Users are not tenant-owned: linking one is a superuser's job.
            fields.append("user")
        return fields


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin):
    """Keys are created here or by `manage.py apikey_create`; the raw key is shown once
    as a message and only its hash is stored. Revoke instead of deleting."""

    list_display = ("prefix", "name", "tenant", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("prefix", "name")
    list_select_related = ("tenant",)
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("tenant", "name")
        return ("tenant", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["tenant", "prefix", "created_at", "last_used_at", "revoked_at"]
        return fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        tenant = admin_tenant(request) or obj.tenant
        api_key, raw = api_key_create(tenant=tenant, name=obj.name)
        # The admin goes on with `obj` (log entry, redirect): make it the stored row.
        obj.pk, obj.tenant, obj.prefix = api_key.pk, api_key.tenant, api_key.prefix
        obj.hashed_key, obj.created_at = api_key.hashed_key, api_key.created_at
        obj._state.adding = False
        messages.warning(
            request,
            f"API key for {tenant.slug}: {raw} — copy it now; it is not stored and "
            "will not be shown again.",
        )

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


class RecentActivityFormSet(BaseInlineFormSet):
    """Only the latest TIMELINE_LIMIT activities: a lead may have thousands."""

    def get_queryset(self):
        queryset = super().get_queryset()
        recent = queryset.order_by("-occurred_at", "-id").values_list("pk", flat=True)
        return queryset.filter(pk__in=list(recent[:TIMELINE_LIMIT])).order_by("-occurred_at", "-id")


class LeadActivityInline(admin.TabularInline):
    model = LeadActivity
    formset = RecentActivityFormSet
    fields = ("occurred_at", "kind", "direction", "channel", "value", "source_event_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"Activity timeline (latest {TIMELINE_LIMIT}, newest first)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LeadForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        _field_check(self, "phone", phone_to_e164)
        _field_check(self, "timezone", timezone_check)
        agent = cleaned.get("assigned_agent")
        tenant = (
            cleaned.get("tenant")
            or getattr(self, "admin_tenant", None)
            or getattr(self.instance, "tenant", None)
        )
        if agent is not None and tenant is not None and agent.tenant_id != tenant.pk:
            self.add_error("assigned_agent", "This agent belongs to another tenant.")
        return cleaned


@admin.register(Lead)
class LeadAdmin(TenantScopedAdmin):
    form = LeadForm
    list_display = (
        "__str__",
        "external_id",
        "status",
        "risk_tier",
        "risk_score",
        "source",
        "assigned_agent",
        "last_activity_at",
    )
    list_filter = (
        "status",
        "risk_tier",
        "source",
        ("assigned_agent", RelatedOnlyFieldListFilter),
    )
    search_fields = ("first_name", "last_name", "email", "phone", "external_id")
    list_select_related = ("assigned_agent",)
    readonly_fields = (
        "risk_score",
        "risk_tier",
        "risk_scored_at",
        "last_activity_at",
        "last_inbound_at",
        "created_at",
        "updated_at",
    )
    inlines = (LeadActivityInline,)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        # A manager's form has no tenant field; clean() checks agents against theirs.
        form.admin_tenant = admin_tenant(request)
        return form


@admin.register(LeadActivity)
class LeadActivityAdmin(TenantScopedAdmin):
    """Activities arrive through the API and webhooks; here they are read, not written."""

    list_display = ("occurred_at", "lead", "kind", "direction", "channel", "source_event_id")
    list_filter = ("kind", "direction", "channel")
    search_fields = ("source_event_id", "lead__external_id", "lead__email")
    list_select_related = ("lead",)
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(TenantScopedAdmin):
    """The inbox of verified webhooks, read-only; failed ones can be reprocessed."""

    list_display = ("received_at", "event_type", "webhook_id", "status", "tenant", "processed_at")
    list_filter = ("status", "event_type", "signature_scheme")
    search_fields = ("webhook_id", "event_type")
    list_select_related = ("tenant",)
    ordering = ("-received_at",)
    actions = ("reprocess",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    @admin.action(description="Reprocess the selected webhook events", permissions=["view"])
    def reprocess(self, request, queryset):
        count = 0
        for event in queryset:
            webhook_event_reprocess(webhook_event=event)
            count += 1
        self.message_user(request, f"Queued {count} webhook event(s) for processing.")


from churnapp import admin_scoring  # noqa: E402, F401  (risk scoring screens)
