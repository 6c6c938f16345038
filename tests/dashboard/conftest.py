"""Fixtures for the dashboard tests: managers and agents who can log in, per tenant."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from churnapp.factories import AgentFactory
from churnapp.models import AgentRole

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
