"""The tracking API: resync, timelines, analytics, impact and exports; tenant walls on each."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.utils import timezone

from tests.tracking.conftest import at
from tracking.events import tracking_event_record
from tracking.models import TrackingEvent

TODAY = timezone.now().date()
YESTERDAY = TODAY - dt.timedelta(days=1)


@pytest.fixture
def mine(world):
    iv = world.intervention(
        started=at(YESTERDAY, 1), resolved=at(YESTERDAY, 2), outcome="converted"
    )
    tracking_event_record(
        tenant_id=world.tenant.id,
        kind="outcome_recorded",
        lead_id=iv.lead_id,
        intervention_id=iv.id,
        stage=1,
        data={"outcome": "converted"},
    )
    return iv


def _csv(response) -> list[dict]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_events_resync_by_cursor(api_client, mine):
    first = api_client.get("/api/tracking/events/", {"after_id": 0, "limit": 2})
    assert first.status_code == 200
    body = first.json()
    all_ids = list(
        TrackingEvent.objects.filter(tenant=mine.tenant).order_by("id").values_list("id", flat=True)
    )
    assert [e["id"] for e in body["results"]] == all_ids[:2]
    assert body["has_more"] is (len(all_ids) > 2)
    rest = api_client.get("/api/tracking/events/", {"after_id": body["last_id"]}).json()
    assert [e["id"] for e in rest["results"]] == all_ids[2:]
    assert rest["has_more"] is False


def test_events_reject_a_bad_limit(api_client, mine):
    response = api_client.get("/api/tracking/events/", {"limit": 0})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "limit" in response.json()["error"]["message"]


def test_timeline_of_an_intervention(api_client, mine):
    response = api_client.get(f"/api/interventions/{mine.id}/timeline/")
    assert response.status_code == 200
    kinds = [e["kind"] for e in response.json()]
    assert kinds[-1] == "outcome_recorded"
    assert "message_delivered" in kinds  # the message row written for it


def test_analytics_endpoints_answer_a_period(api_client, mine):
    success = api_client.get("/api/analytics/success/", {"period": "7d"})
    assert success.status_code == 200
    assert success.json()["success"]["overall"]["successes"] == 1
    assert success.json()["period"]["days"] == 7
    impact = api_client.get(
        "/api/analytics/impact/", {"from": YESTERDAY.isoformat(), "to": TODAY.isoformat()}
    )
    assert impact.status_code == 200
    assert impact.json()["sufficient_data"] is False
    assert impact.json()["arms"]["treated"]["episodes"] == 1


@pytest.mark.parametrize(
    "params, field",
    [
        ({"period": "5d"}, "period"),
        ({"from": "2026-02-10", "to": "2026-02-01"}, "to"),
        ({"from": "not-a-date"}, "from"),
        ({"period": "7d", "from": "2026-01-01"}, "either period or from/to"),
        ({"from": "2010-01-01", "to": "2026-01-01"}, "to"),
    ],
)
def test_bad_periods_get_a_clear_400(api_client, params, field):
    response = api_client.get("/api/analytics/success/", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]


def test_exports_stream_csv(api_client, mine, world):
    rows = _csv(api_client.get("/api/tracking/export/interventions.csv"))
    assert [(int(r["id"]), r["outcome"]) for r in rows] == [(mine.id, "converted")]
    messages = _csv(api_client.get("/api/tracking/export/messages.csv"))
    assert len(messages) == 1 and messages[0]["channel"] == "email"
    events = _csv(
        api_client.get(
            "/api/tracking/export/events.csv",
            {"from": TODAY.isoformat(), "to": TODAY.isoformat()},
        )
    )
    assert "outcome_recorded" in [e["kind"] for e in events]
    from tracking.services.rollups import rollup_days

    rollup_days(tenant_id=mine.tenant_id, first_day=YESTERDAY, last_day=YESTERDAY)
    rollups = _csv(api_client.get("/api/tracking/export/intervention-rollups.csv"))
    assert sum(int(r["started"]) for r in rollups) == 1
    assert rollups[0]["day"] == YESTERDAY.isoformat()
    # today's rows from the intraday refresh are part of a day: not exported
    from tracking.services.rollups import rollup_today

    world.intervention(started=at(TODAY, 3), resolved=at(TODAY, 4), outcome="churned")
    assert rollup_today(tenant_id=mine.tenant_id, now=at(TODAY, 12))["interventions"] > 0
    again = _csv(api_client.get("/api/tracking/export/intervention-rollups.csv"))
    assert [r["day"] for r in again] == [YESTERDAY.isoformat()]
    assert api_client.get("/api/tracking/export/nope.csv").status_code == 404


def test_tenant_walls_on_every_endpoint(other_api_client, mine):
    # another tenant's key sees none of this tenant's rows, on every endpoint
    events = other_api_client.get("/api/tracking/events/").json()
    assert events["results"] == []
    assert other_api_client.get(f"/api/interventions/{mine.id}/timeline/").status_code == 404
    success = other_api_client.get("/api/analytics/success/", {"period": "7d"}).json()
    assert success["volume"]["started"] == 0
    assert success["success"]["overall"]["n"] == 0
    assert success["funnel"] == []
    impact = other_api_client.get("/api/analytics/impact/", {"period": "7d"}).json()
    assert impact["arms"]["treated"]["episodes"] == 0
    assert impact["cost"]["messages_sent"] == 0
    for dataset in (
        "interventions",
        "messages",
        "events",
        "intervention-rollups",
        "message-rollups",
        "escalation-rollups",
    ):
        assert _csv(other_api_client.get(f"/api/tracking/export/{dataset}.csv")) == []


def test_no_key_no_data(client, mine):
    for path in (
        "/api/tracking/events/",
        f"/api/interventions/{mine.id}/timeline/",
        "/api/analytics/success/",
        "/api/analytics/impact/",
        "/api/tracking/export/interventions.csv",
    ):
        assert client.get(path).status_code in (401, 403), path


def test_the_schema_documents_the_endpoints_and_the_success_definition(db):
    import yaml
    from rest_framework.test import APIClient

    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    for path in (
        "/api/tracking/events/",
        "/api/tracking/export/{dataset}.csv",
        "/api/interventions/{id}/timeline/",
        "/api/analytics/success/",
        "/api/analytics/impact/",
    ):
        assert path in schema["paths"], path
    success = schema["paths"]["/api/analytics/success/"]["get"]
    assert "re_engaged" in success["description"] and "converted" in success["description"]
    assert {p["name"] for p in success["parameters"]} >= {"period", "from", "to"}
    impact = schema["paths"]["/api/analytics/impact/"]["get"]
    assert "Newcombe" in impact["description"]
    assert "examples" in impact["responses"]["200"]["content"]["application/json"]
