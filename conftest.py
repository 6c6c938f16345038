"""Shared pytest fixtures: tenants, API clients. Real PostgreSQL and Redis underneath."""

import pytest
from rest_framework.test import APIClient

from churnapp.models import Tenant
from churnapp.services.api_keys import api_key_create

pytest_plugins = ["tests.fixtures_ghl"]


@pytest.fixture
def tenant(db) -> Tenant:
    return Tenant.objects.create(name="Acme Realty", slug="acme", timezone="America/Chicago")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return Tenant.objects.create(name="Other Homes", slug="other", timezone="America/Denver")


def _client_for(tenant: Tenant) -> APIClient:
    _, raw = api_key_create(tenant=tenant, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api_client(tenant) -> APIClient:
    return _client_for(tenant)


@pytest.fixture
def other_api_client(other_tenant) -> APIClient:
    return _client_for(other_tenant)
