"""The demo tenant `manage.py up` creates: secrets shown once, a tenant-scoped manager."""

import pytest
from django.contrib.auth import get_user_model

from churnapp.models import Agent, AgentRole
from churnapp.services.api_keys import api_key_authenticate
from churnapp.services.demo import MANAGERS_GROUP, demo_setup

pytestmark = pytest.mark.django_db


def test_first_run_creates_everything_and_shows_secrets_once():
    # when
    first = demo_setup()
    second = demo_setup()

    # then
    assert first.tenant_created and first.tenant.slug == "demo"
    assert first.manager_password and first.admin_password and first.api_key
    assert not second.tenant_created
    assert (second.manager_password, second.admin_password, second.api_key) == (None,) * 3
    assert second.tenant.pk == first.tenant.pk

    User = get_user_model()
    manager = User.objects.get(username="manager")
    admin = User.objects.get(username="admin")
    assert manager.check_password(first.manager_password)
    assert admin.check_password(first.admin_password)
    assert manager.is_staff and not manager.is_superuser
    assert admin.is_superuser
    agent = Agent.objects.get(user=manager)
    assert (agent.tenant, agent.role) == (first.tenant, AgentRole.MANAGER)
    assert api_key_authenticate(raw_key=first.api_key).tenant == first.tenant


def test_manager_gets_model_permissions_through_the_managers_group():
    demo_setup()
    manager = get_user_model().objects.get(username="manager")

    assert manager.groups.filter(name=MANAGERS_GROUP).exists()
    assert manager.has_perm("churnapp.view_lead")
    assert manager.has_perm("churnapp.change_lead")
    assert manager.has_perm("churnapp.add_apikey")
    assert manager.has_perm("django_celery_beat.view_periodictask")
    # Tenants and jobs (global: they act on every tenant) are operators' business, not
    # one tenant's manager's.
    assert not manager.has_perm("django_celery_beat.change_periodictask")
    assert not manager.has_perm("churnapp.add_tenant")
    assert not manager.has_perm("churnapp.delete_tenant")
    assert not manager.has_perm("django_celery_beat.add_periodictask")
    assert not manager.has_perm("auth.change_user")


def test_a_missing_admin_is_recreated_without_touching_the_rest():
    first = demo_setup()
    get_user_model().objects.filter(username="admin").delete()

    again = demo_setup()

    assert again.admin_password and again.admin_password != first.admin_password
    assert again.manager_password is None and again.api_key is None
