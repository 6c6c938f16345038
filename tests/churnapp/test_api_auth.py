"""API keys and the one error format: every refusal reads {"error": {code, message, details}}."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from rest_framework.test import APIClient

from churnapp.factories import AgentFactory
from churnapp.models import ApiKey
from churnapp.services.api_keys import api_key_create, api_key_revoke


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_missing_key_is_401(tenant):
    response = APIClient().get(reverse("churnapp:lead-list"))
    _assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(
    "header",
    ["Api-Key pcp_nothere_secret", "Api-Key garbage", "Bearer pcp_x_y", "Api-Key "],
)
def test_invalid_key_is_401(tenant, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    _assert_error(client.get(reverse("churnapp:lead-list")), 401)


def test_wrong_secret_for_a_real_prefix_is_401(tenant):
    api_key, raw = api_key_create(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key pcp_{api_key.prefix}_not-the-secret")
    _assert_error(client.get(reverse("churnapp:lead-list")), 401, "authentication_failed")


def test_revoked_key_is_401(tenant):
    api_key, raw = api_key_create(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.get(reverse("churnapp:lead-list")).status_code == 200
    api_key_revoke(api_key=api_key)
    error = _assert_error(client.get(reverse("churnapp:lead-list")), 401)
    assert "revoked" in error["message"]


def test_inactive_tenant_key_is_401(api_client, tenant):
    tenant.is_active = False
    tenant.save()
    _assert_error(api_client.get(reverse("churnapp:lead-list")), 401)


def test_session_user_without_agent_is_403(tenant):
    user = User.objects.create_user("nobody", password="x" * 12)
    client = APIClient()
    client.force_login(user)
    _assert_error(client.get(reverse("churnapp:lead-list")), 403)


def test_session_user_with_agent_sees_their_tenant(tenant):
    user = User.objects.create_user("agent", password="x" * 12)
    AgentFactory(tenant=tenant, user=user)
    client = APIClient()
    client.force_login(user)
    assert client.get(reverse("churnapp:lead-list")).status_code == 200


def test_method_not_allowed_uses_the_format(api_client):
    _assert_error(api_client.delete(reverse("churnapp:lead-list")), 405, "method_not_allowed")


def test_unsupported_media_type_uses_the_format(api_client):
    response = api_client.post(
        reverse("churnapp:lead-bulk-upsert"), data="items=1", content_type="text/plain"
    )
    _assert_error(response, 415, "unsupported_media_type")


def test_malformed_json_uses_the_format(api_client):
    response = api_client.post(
        reverse("churnapp:lead-bulk-upsert"), data="{not json", content_type="application/json"
    )
    _assert_error(response, 400, "parse_error")


def test_unknown_api_path_is_a_json_404(api_client):
    _assert_error(api_client.get("/api/no-such-thing/"), 404, "not_found")


def test_api_key_rows_hold_no_raw_secret(tenant):
    api_key, raw = api_key_create(tenant=tenant)
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert raw.split("_", 2)[2] not in stored.hashed_key
    assert len(stored.hashed_key) == 64
