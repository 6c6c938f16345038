"""The OpenAPI schema is served and documents churnapp's endpoints."""

import yaml
from django.core.management import call_command
from rest_framework.test import APIClient


def test_schema_endpoint_lists_our_paths(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    for path in (
        "/api/leads/",
        "/api/leads/{lead_id}/",
        "/api/leads/by-external-id/{external_id}/",
        "/api/leads/upsert/",
        "/api/leads/bulk/",
        "/api/activities/",
        "/api/activities/bulk/",
        "/api/webhooks/ghl/{tenant_slug}/",
    ):
        assert path in schema["paths"], path
    # the webhook authenticates by signature: no API key scheme on it, one on the rest
    assert "security" not in schema["paths"]["/api/webhooks/ghl/{tenant_slug}/"]["post"]
    assert {"ApiKeyAuth": []} in schema["paths"]["/api/leads/"]["get"]["security"]
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]


def test_schema_validates_without_warnings(db, tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))


def test_swagger_ui_is_served_without_a_cdn(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"cdn.jsdelivr" not in response.content
