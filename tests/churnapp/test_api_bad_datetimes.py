"""Datetimes that parse but cannot exist, or that PostgreSQL cannot hold, are 400s."""

from churnapp.factories import LeadFactory
from churnapp.models import LeadActivity


def test_impossible_minute_is_a_clear_400(api_client, tenant):
    lead = LeadFactory(tenant=tenant)
    item = {
        "lead_external_id": lead.external_id,
        "kind": "sms_inbound",
        "source_event_id": "e1",
        "occurred_at": "2026-01-01T10:60:00Z",
    }
    response = api_client.post("/api/activities/bulk/", {"items": [item]}, format="json")
    assert response.status_code == 400
    assert "0" in response.json()["error"]["details"]["items"]
    assert not LeadActivity.objects.exists()


def test_odd_but_legal_offsets_filter_without_a_server_error(api_client, tenant):
    # +23:14 is a legal Python offset but beyond PostgreSQL's +-15:59
    response = api_client.get("/api/activities/", {"occurred_since": "2024-03-17T08:27:25+23:14"})
    assert response.status_code == 200
