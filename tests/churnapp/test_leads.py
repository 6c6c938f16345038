"""Lead upsert and bulk upsert: normalization, all-or-nothing, filters, tenant walls."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import Lead, RiskTier
from churnapp.services.leads import lead_upsert, leads_bulk_upsert

UPSERT = reverse("churnapp:lead-upsert")
BULK = reverse("churnapp:lead-bulk-upsert")
LIST = reverse("churnapp:lead-list")


# --- services ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("(512) 555-0142", "+15125550142"),
        ("512.555.0142", "+15125550142"),
        ("+1 512 555 0142", "+15125550142"),
        ("+44 20 7946 0958", "+442079460958"),
        ("", ""),
    ],
)
def test_phone_is_stored_as_e164(tenant, raw, e164):
    lead, created = lead_upsert(tenant=tenant, external_id="c-1", phone=raw)
    assert created
    assert Lead.objects.get(pk=lead.pk).phone == e164


@pytest.mark.parametrize("raw", ["555-0142", "not a phone", "+1 000 000 0000"])
def test_invalid_phone_is_a_clear_error(tenant, raw):
    with pytest.raises(ApplicationError) as err:
        lead_upsert(tenant=tenant, external_id="c-1", phone=raw)
    assert "phone" in err.value.details
    assert "phone" in err.value.message
    assert not Lead.objects.exists()


def test_upsert_updates_only_the_fields_sent(tenant):
    # given
    lead = LeadFactory(tenant=tenant, external_id="c-1", first_name="Ann", email="a@x.com")
    # when
    updated, created = lead_upsert(tenant=tenant, external_id="c-1", email="new@x.com")
    # then
    assert not created and updated.pk == lead.pk
    lead.refresh_from_db()
    assert (lead.first_name, lead.email) == ("Ann", "new@x.com")


def test_timezone_email_and_agent_are_validated(tenant, other_tenant):
    foreign_agent = AgentFactory(tenant=other_tenant, ghl_user_id="u-foreign")
    with pytest.raises(ApplicationError) as err:
        leads_bulk_upsert(
            tenant=tenant,
            items=[
                {"external_id": "a", "timezone": "Mars/Olympus"},
                {"external_id": "b", "email": "nope"},
                {"external_id": "c", "assigned_agent_ghl_user_id": "u-foreign"},
                {"external_id": "d", "assigned_agent_id": foreign_agent.pk},
                {"external_id": "e", "first_name": "fine"},
                {"external_id": "a", "first_name": "twice"},
                {"external_id": "f", "colour": "blue"},
            ],
        )
    items = err.value.details["items"]
    assert set(items) == {"0", "1", "2", "3", "5", "6"}
    assert "IANA" in items["0"]["timezone"]
    assert "email" in items["1"]
    assert "u-foreign" in items["2"]["assigned_agent_ghl_user_id"]
    assert "assigned_agent_id" in items["3"]
    assert "repeats item 0" in items["5"]["external_id"]
    assert items["6"] == {"colour": "unknown field"}
    assert not Lead.objects.exists()


def test_bulk_upsert_of_1000_creates_and_updates_in_few_queries(tenant):
    # given 400 existing leads and an agent
    agent = AgentFactory(tenant=tenant, ghl_user_id="u-1")
    Lead.objects.bulk_create(
        [Lead(tenant=tenant, external_id=f"c-{i}", first_name="old") for i in range(400)]
    )
    items = [
        {
            "external_id": f"c-{i}",
            "first_name": f"N{i}",
            "phone": f"(512) 555-{i % 10000:04d}",
            "assigned_agent_ghl_user_id": "u-1",
        }
        for i in range(1000)
    ]
    # when
    with CaptureQueriesContext(connection) as queries:
        outcomes = leads_bulk_upsert(tenant=tenant, items=items)
    # then
    assert [o.status for o in outcomes].count("updated") == 400
    assert [o.status for o in outcomes].count("created") == 600
    assert len(queries) < 20  # one SELECT of agents, one of leads, INSERT, a few UPDATEs
    assert Lead.objects.filter(tenant=tenant).count() == 1000
    lead = Lead.objects.get(tenant=tenant, external_id="c-7")
    assert (lead.first_name, lead.phone, lead.assigned_agent) == ("N7", "+15125550007", agent)


def test_more_than_1000_is_refused(tenant):
    with pytest.raises(ApplicationError) as err:
        leads_bulk_upsert(tenant=tenant, items=[{"external_id": str(i)} for i in range(1001)])
    assert err.value.code == "batch_too_large"


# --- API -----------------------------------------------------------------------------


def test_put_upsert_creates_then_updates(api_client, tenant):
    body = {"external_id": "ghl-1", "first_name": "Jo", "phone": "512-555-0100", "tags": ["buyer"]}
    first = api_client.put(UPSERT, body, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["phone"] == "+15125550100"
    second = api_client.put(UPSERT, {"external_id": "ghl-1", "status": "lost"}, format="json")
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["status"] == "lost"
    assert second.json()["first_name"] == "Jo"


def test_upsert_invalid_phone_is_400_in_the_error_format(api_client):
    response = api_client.put(UPSERT, {"external_id": "x", "phone": "12"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "phone" in error["details"] and "phone" in error["message"]
    assert not Lead.objects.exists()


def test_upsert_with_naive_datetime_is_400(api_client):
    response = api_client.put(
        UPSERT, {"external_id": "x", "crm_created_at": "2025-01-01T10:00:00"}, format="json"
    )
    assert response.status_code == 400
    assert "crm_created_at" in response.json()["error"]["details"]


def test_bulk_upsert_answers_per_item(api_client, tenant):
    LeadFactory(tenant=tenant, external_id="old")
    response = api_client.post(
        BULK,
        {"items": [{"external_id": "old", "source": "zillow"}, {"external_id": "new"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["created"], body["updated"]) == (1, 1)
    assert [i["status"] for i in body["items"]] == ["updated", "created"]


def test_bulk_upsert_with_one_bad_item_stores_nothing(api_client):
    items = [
        {"external_id": "a", "phone": "512-555-0101"},
        {"external_id": "b", "phone": "not a phone"},
        {"external_id": "c", "consent_sms": "sometimes"},
        {"first_name": "no id"},
    ]
    response = api_client.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]["items"]
    # type errors and domain errors are reported together, by request index
    assert set(details) == {"1", "2", "3"}
    assert "phone" in details["1"] and "consent_sms" in details["2"]
    assert "external_id" in details["3"]
    assert not Lead.objects.exists()


def test_bulk_upsert_repeat_is_reported_by_request_index(api_client):
    items = [{"external_id": "a"}, {"external_id": 5, "tags": "x"}, {"external_id": "a"}]
    response = api_client.post(BULK, {"items": items}, format="json")
    details = response.json()["error"]["details"]["items"]
    assert set(details) == {"1", "2"}
    assert "repeats item 0" in details["2"]["external_id"]


def test_bulk_upsert_over_1000_is_400(api_client):
    items = [{"external_id": str(i)} for i in range(1001)]
    response = api_client.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "batch_too_large"


@pytest.mark.parametrize("body", [{}, {"items": "x"}, {"items": []}, [1, 2]])
def test_bulk_upsert_needs_a_list_of_items(api_client, body):
    response = api_client.post(BULK, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_list_filters(api_client, tenant):
    agent = AgentFactory(tenant=tenant)
    hot = LeadFactory(
        tenant=tenant, first_name="Maria", risk_tier=RiskTier.CRITICAL, assigned_agent=agent
    )
    LeadFactory(tenant=tenant, first_name="Bob", source="referral", status="lost")
    deleted = LeadFactory(tenant=tenant, deleted_at=timezone.now())

    def ids(**params):
        response = api_client.get(LIST, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(risk_tier="critical") == {hot.pk}
    assert ids(assigned_agent=agent.pk) == {hot.pk}
    assert ids(assigned_agent_ghl_user_id=agent.ghl_user_id) == {hot.pk}
    assert ids(search="mar") == {hot.pk}
    assert ids(search=hot.external_id) == {hot.pk}
    assert len(ids(status="lost")) == 1
    assert len(ids(source="referral")) == 1
    assert deleted.pk not in ids()
    assert deleted.pk in ids(include_deleted="true")
    future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    assert ids(updated_since=future) == set()


def test_list_rejects_bad_filter_values(api_client):
    response = api_client.get(LIST, {"risk_tier": "volcanic"})
    assert response.status_code == 400
    assert "risk_tier" in response.json()["error"]["details"]


def test_retrieve_by_id_and_external_id(api_client, tenant):
    lead = LeadFactory(tenant=tenant, external_id="abc-123")
    by_id = api_client.get(reverse("churnapp:lead-detail", args=[lead.pk]))
    by_ext = api_client.get(reverse("churnapp:lead-by-external-id", args=["abc-123"]))
    assert by_id.status_code == by_ext.status_code == 200
    assert by_id.json() == by_ext.json()


def test_tenant_wall(api_client, other_api_client, tenant, other_tenant):
    # given a lead of the other tenant
    theirs = LeadFactory(tenant=other_tenant, external_id="shared-id", first_name="Theirs")
    # then we cannot see it
    assert api_client.get(reverse("churnapp:lead-detail", args=[theirs.pk])).status_code == 404
    assert (
        api_client.get(reverse("churnapp:lead-by-external-id", args=["shared-id"])).status_code
        == 404
    )
    assert api_client.get(LIST).json()["results"] == []
    # and an upsert with the same external id makes our own lead, never touches theirs
    response = api_client.put(
        UPSERT, {"external_id": "shared-id", "first_name": "Ours"}, format="json"
    )
    assert response.status_code == 201
    theirs.refresh_from_db()
    assert theirs.first_name == "Theirs"
    assert Lead.objects.filter(external_id="shared-id").count() == 2
    # and we cannot assign their agent
    their_agent = AgentFactory(tenant=other_tenant)
    response = api_client.put(
        UPSERT, {"external_id": "shared-id", "assigned_agent_id": their_agent.pk}, format="json"
    )
    assert response.status_code == 400
    assert other_api_client.get(LIST).json()["count"] == 1
