"""Fixtures for the dashboard tests: managers and agents who can log in, per tenant."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from churnapp.factories import AgentFactory
from churnapp.models import AgentRole
from tests.dashboard.browser import chromium, require_browser

PASSWORD = "dashboard-pass-1"


def _user(username: str, *, staff: bool):
    return get_user_model().objects.create_user(
        username=username, password=PASSWORD, is_staff=staff, email=f"{username}@example.com"
    )


@pytest.fixture
def manager_user(tenant):
    user = _user("maya", staff=True)
    AgentFactory(tenant=tenant, role=AgentRole.MANAGER, name="Maya Manager", user=user)
    return user


@pytest.fixture
def agent_user(tenant):
    user = _user("alex", staff=False)
    AgentFactory(tenant=tenant, name="Alex Agent", user=user)
    return user


@pytest.fixture
def other_manager_user(other_tenant):
    user = _user("otto", staff=True)
    AgentFactory(tenant=other_tenant, role=AgentRole.MANAGER, name="Otto Other", user=user)
    return user


@pytest.fixture
def browser(monkeypatch):
    require_browser()
    # Playwright's sync API keeps an event loop running in this thread; the test's own
    # ORM calls are still plain synchronous code (Django's documented escape hatch).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as new_context:
        yield new_context


@pytest.fixture
def backends(settings):
    """Lead-facing channels deliver to the in-memory backend; agent alerts go over the
    real channel layer to the dashboard."""
    settings.NOTIFICATION_BACKENDS = {
        c: "notifications.backends.locmem.LocmemBackend"
        for c in django_settings.NOTIFICATION_BACKENDS
    }
    settings.NOTIFICATION_BACKENDS["agent_alert"] = (
        "notifications.backends.agent_alert.ChannelLayerAlertBackend"
    )
    return settings
