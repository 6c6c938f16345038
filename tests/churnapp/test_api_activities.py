"""POST /api/activities/bulk/ and GET /api/activities/: idempotent, all or nothing, walled."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from churnapp.factories import LeadActivityFactory, LeadFactory
from churnapp.models import LeadActivity

BULK = reverse("churnapp:activity-bulk-ingest")
LIST = reverse("churnapp:activity-list")


def _iso(hours_ago: float) -> str:
    return (timezone.now() - dt.timedelta(hours=hours_ago)).isoformat()


def _item(lead, n, kind="sms_inbound", **extra):
    return {
        "lead_external_id": lead.external_id,
        "kind": kind,
        "occurred_at": _iso(1),
        "source_event_id": f"evt-{n}",
        **extra,
    }


def test_same_batch_twice_is_stored_once(api_client, tenant):
    # given
    lead = LeadFactory(tenant=tenant)
    batch = {"items": [_item(lead, 1), _item(lead, 2, "email_open", value=1.5)]}
    # when
    first = api_client.post(BULK, batch, format="json")
    second = api_client.post(BULK, batch, format="json")
    # then
    assert first.status_code == 201, first.content
    assert first.json()["created"] == 2 and first.json()["duplicates"] == 0
    assert second.status_code == 200
    assert second.json()["duplicates"] == 2 and second.json()["created"] == 0
    assert [i["status"] for i in second.json()["items"]] == ["duplicate", "duplicate"]
    assert LeadActivity.objects.filter(lead=lead).count() == 2
    lead.refresh_from_db()
    assert lead.last_inbound_at is not None


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"kind": "teleport"}, "kind"),
        ({"occurred_at": "2025-01-01T10:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"value": "lots"}, "value"),
        ({"payload": [1, 2]}, "payload"),
        ({"source_event_id": None}, "source_event_id"),
        ({"direction": "sideways"}, "direction"),
    ],
)
def test_bad_item_is_400_with_per_item_errors_and_nothing_stored(api_client, tenant, bad, field):
    lead = LeadFactory(tenant=tenant)
    items = [_item(lead, 1), {**_item(lead, 2), **bad}]
    response = api_client.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert list(error["details"]["items"]) == ["1"]
    assert field in error["details"]["items"]["1"]
    assert LeadActivity.objects.count() == 0


def test_missing_fields_are_listed(api_client, tenant):
    response = api_client.post(BULK, {"items": [{"kind": "sms_inbound"}]}, format="json")
    assert response.status_code == 400
    missing = response.json()["error"]["details"]["items"]["0"]
    assert {"lead_external_id", "occurred_at", "source_event_id"} <= set(missing)


def test_future_time_unknown_lead_and_contradicting_direction_are_400(api_client, tenant):
    lead = LeadFactory(tenant=tenant)
    items = [
        _item(lead, 1),
        {**_item(lead, 2), "occurred_at": (timezone.now() + dt.timedelta(days=1)).isoformat()},
        {**_item(lead, 3), "lead_external_id": "nobody"},
        {**_item(lead, 4, "sms_outbound"), "direction": "inbound"},
    ]
    response = api_client.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]["items"]
    assert set(details) == {"1", "2", "3"}
    assert "future" in details["1"] and "nobody" in details["2"]
    assert LeadActivity.objects.count() == 0


def test_more_than_1000_is_refused_before_any_item_is_read(api_client, tenant):
    lead = LeadFactory(tenant=tenant)
    items = [_item(lead, n) for n in range(1001)]
    response = api_client.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "batch_too_large"
    assert LeadActivity.objects.count() == 0


def test_cannot_ingest_for_another_tenants_lead(api_client, other_tenant):
    theirs = LeadFactory(tenant=other_tenant)
    response = api_client.post(BULK, {"items": [_item(theirs, 1)]}, format="json")
    assert response.status_code == 400
    assert "unknown lead" in response.json()["error"]["details"]["items"]["0"]
    assert LeadActivity.objects.count() == 0


def test_list_is_scoped_and_filtered(api_client, tenant, other_tenant):
    lead = LeadFactory(tenant=tenant)
    mine = LeadActivityFactory(lead=lead, occurred_at=timezone.now() - dt.timedelta(hours=2))
    newer = LeadActivityFactory(lead=lead, kind="email_open")
    LeadActivityFactory(lead=LeadFactory(tenant=tenant))
    theirs = LeadActivityFactory(lead=LeadFactory(tenant=other_tenant))

    response = api_client.get(LIST, {"lead": lead.pk})
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [newer.pk, mine.pk]
    assert api_client.get(LIST, {"lead": theirs.lead_id}).json()["results"] == []
    by_ext = api_client.get(LIST, {"lead_external_id": lead.external_id, "kind": "email_open"})
    assert [row["id"] for row in by_ext.json()["results"]] == [newer.pk]
    assert theirs.pk not in {row["id"] for row in api_client.get(LIST).json()["results"]}
