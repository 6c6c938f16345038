"""Tenant walls in the admin: a manager who is not a superuser sees only their tenant.

Every app's ModelAdmin for a tenant-owned model inherits `TenantScopedAdmin`. It
filters the changelist and every object lookup by the user's tenant, limits foreign
key choices to that tenant, and fills `tenant` on create.
"""

from __future__ import annotations

from django.contrib import admin

from churnapp.models import Tenant


def admin_tenant(request) -> Tenant | None:
    """The tenant a non-superuser staff member manages (None for a superuser)."""
    if request.user.is_superuser:
        return None
    agent = getattr(request.user, "agent", None)
    return agent.tenant if agent is not None else None


class TenantScopedAdmin(admin.ModelAdmin):
    # The lookup from this model to its tenant, e.g. "tenant" or "lead__tenant".
    tenant_field = "tenant"

    def _scoped(self, request, queryset):
        if request.user.is_superuser:
            return queryset
        tenant = admin_tenant(request)
        if tenant is None:
            return queryset.none()
        return queryset.filter(**{self.tenant_field: tenant})

    def get_queryset(self, request):
        return self._scoped(request, super().get_queryset(request))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        tenant = admin_tenant(request)
        if not request.user.is_superuser:
            model = db_field.related_model
            if model is Tenant:
                kwargs["queryset"] = Tenant.objects.filter(pk=getattr(tenant, "pk", None))
            elif any(f.name == "tenant" for f in model._meta.get_fields()):
                kwargs["queryset"] = model._default_manager.filter(tenant=tenant)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser and self.tenant_field == "tenant":
            fields.append("tenant")
        return fields

    def save_model(self, request, obj, form, change):
        tenant = admin_tenant(request)
        if tenant is not None and self.tenant_field == "tenant":
            obj.tenant = tenant
        super().save_model(request, obj, form, change)

    def has_module_permission(self, request):
        if not request.user.is_superuser and admin_tenant(request) is None:
            return False
        return super().has_module_permission(request)
