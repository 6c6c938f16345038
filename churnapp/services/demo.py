"""The demo tenant that `manage.py up` creates: a manager, an admin and an API key."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from churnapp.models import Agent, AgentRole, Tenant
from churnapp.services.api_keys import api_key_create

DEMO_TENANT_SLUG = "demo"
MANAGERS_GROUP = "Managers"
# Apps whose models a tenant manager works with in the admin; the admin classes keep
# each manager inside their own tenant.
MANAGER_APPS = ("churnapp", "notifications", "interventions", "tracking")
# Schedules are global rows (not per tenant): pausing or retiming one would act on every
# tenant, so a tenant's manager may only view them; operators (superusers) change them.
SCHEDULE_APP = "django_celery_beat"
# Tenants are created by operators (`tenant_create`), not by a tenant's own manager.
WITHHELD_CODENAMES = ("add_tenant", "delete_tenant")


@dataclass(frozen=True)
class DemoSetupResult:
    tenant: Tenant
    tenant_created: bool
    manager_password: str | None  # set only when the user was created by this call
    admin_password: str | None
    api_key: str | None  # the raw key, only when created by this call


def managers_group_sync() -> Group:
    """The "Managers" group with every permission managers need, including those of
    models added since the last run (permissions appear after `migrate`)."""
    group, _ = Group.objects.get_or_create(name=MANAGERS_GROUP)
    permissions = Permission.objects.filter(
        Q(content_type__app_label__in=MANAGER_APPS)
        | Q(
            content_type__app_label=SCHEDULE_APP,
            codename__startswith="view_",
        )
    ).exclude(content_type__app_label="churnapp", codename__in=WITHHELD_CODENAMES)
    group.permissions.set(permissions)
    return group


def _password() -> str:
    # Letters and digits only: easy to copy from a terminal and paste into a login form.
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


@transaction.atomic
def demo_setup(*, tenant_slug: str = DEMO_TENANT_SLUG) -> DemoSetupResult:
    """Create what is missing of the demo tenant, its manager, the admin and an API key.

    Idempotent: existing rows are kept and their secrets are not shown again.
    """
    User = get_user_model()
    group = managers_group_sync()

    tenant, tenant_created = Tenant.objects.get_or_create(
        slug=tenant_slug,
        defaults={"name": "Demo Realty", "timezone": "America/New_York"},
    )

    manager_password = None
    manager = User.objects.filter(username="manager").first()
    if manager is None:
        manager_password = _password()
        # Staff but not superuser: the tenant-scoped admin shows them only their tenant.
        manager = User.objects.create_user(
            username="manager",
            email="manager@demo.example",
            password=manager_password,
            is_staff=True,
        )
    manager.groups.add(group)
    if not Agent.objects.filter(user=manager).exists():
        Agent.objects.create(
            tenant=tenant,
            user=manager,
            name="Demo Manager",
            role=AgentRole.MANAGER,
            email=manager.email,
        )

    admin_password = None
    if not User.objects.filter(username="admin").exists():
        admin_password = _password()
        User.objects.create_superuser(
            username="admin", email="admin@demo.example", password=admin_password
        )

    raw_key = None
    if not tenant.api_keys.filter(name="demo").exists():
        _, raw_key = api_key_create(tenant=tenant, name="demo")

    return DemoSetupResult(
        tenant=tenant,
        tenant_created=tenant_created,
        manager_password=manager_password,
        admin_password=admin_password,
        api_key=raw_key,
    )
