"""Tenants are walls, endpoint by endpoint: every URL the project serves is either probed
here with tenant A's API key and A's manager session against tenant B's rows, or listed
as exempt with the reason. A new endpoint without either fails the inventory test."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from churnapp.models import Lead
from tests.fakes.inapp import sign
from tests.fakes.twilio import twilio_signature
from tests.fixtures_ghl import ghl_event
from tests.security.conftest import Theirs, tenant_snapshot

pytestmark = pytest.mark.django_db


def url_names() -> dict[str, str]:
    """Every named route of the project ("namespace:name"), the admin's aside, with the
    module of its view."""

    def walk(patterns, namespace: str):
        for p in patterns:
            if isinstance(p, URLResolver):
                if p.app_name == "admin":
                    continue
                ns = ":".join(x for x in (namespace, p.namespace) if x)
                yield from walk(p.url_patterns, ns)
            elif isinstance(p, URLPattern) and p.name:
                name = f"{namespace}:{p.name}" if namespace else p.name
                yield name, getattr(p.callback, "__module__", "")

    return dict(walk(get_resolver().url_patterns, ""))


EXEMPT = {
    "healthz": "process health, no tenant data",
    "readyz": "process health, no tenant data",
    "metrics": "counters by queue/channel, no tenant rows; METRICS_TOKEN guards it",
    "ops-health": "admin page of process health (tests/ops), no tenant rows",
    "schema": "the API's description",
    "swagger-ui": "the API's description",
    "redoc": "the API's description",
    "dashboard:login": "the login form",
    "dashboard:logout": "ends the session",
    "dashboard:plotly-js": "a static script",
    # Signed per-message tokens (Django signing, SECRET_KEY): no tenant input to tamper
    # with; test_click_redirect covers forged and swapped tokens.
    "notifications_tracking:open": "signed message token",
    "notifications_tracking:click": "signed message token",
    "notifications_tracking:unsubscribe": "signed message token",
}
# django-anymail's ESP webhooks: one ESP account per deployment (basic auth with
# ANYMAIL_WEBHOOK_SECRET); events find their message by the ESP's message id.
ANYMAIL_REASON = "ESP webhook, matched by provider message id"


@dataclass
class Ctx:
    client: object
    theirs: Theirs
    mine: object
    auth: str  # "key" or "session"
    # B's text that A itself sent (an external id A also uses): an echo, not a leak.
    echoed: set = field(default_factory=set)


def _json(response) -> object:
    return json.loads(response.content) if response.content else None


def _results(response) -> list[dict]:
    body = _json(response)
    return body["results"] if isinstance(body, dict) and "results" in body else body


def _ids(response) -> set[int]:
    return {row["id"] for row in _results(response)}


def expect_404(response) -> None:
    assert response.status_code == 404, response.content[:300]


# Each probe makes tenant A's requests aimed at tenant B and returns the responses; it
# asserts what is specific to the endpoint. The runner then checks, for every probe,
# that no answer carries B's text and that none of B's rows changed.
def p_lead_list(c: Ctx):
    t = c.theirs
    rs = [
        c.client.get("/api/leads/", {"include_deleted": "true"}),
        c.client.get("/api/leads/", {"search": t.EXTERNAL_ID}),
        c.client.get("/api/leads/", {"external_id": t.EXTERNAL_ID}),
    ]
    for r in rs:
        assert r.status_code == 200 and t.lead.pk not in _ids(r)
    return rs


def p_lead_upsert(c: Ctx):
    t = c.theirs
    c.echoed.add(t.EXTERNAL_ID)
    r = c.client.put(
        "/api/leads/upsert/", {"external_id": t.EXTERNAL_ID, "first_name": "Hijack"}, format="json"
    )
    # The same external id in A is A's own, new lead; B's is untouched.
    assert r.status_code == 201
    assert Lead.objects.get(pk=r.json()["id"]).tenant == c.mine
    return [r]


def p_lead_bulk(c: Ctx):
    t = c.theirs
    c.echoed.add(t.EXTERNAL_ID)
    r = c.client.post(
        "/api/leads/bulk/",
        {"items": [{"external_id": t.EXTERNAL_ID, "first_name": "Hijack"}]},
        format="json",
    )
    assert r.status_code == 200 and r.json()["created"] == 1
    return [r]


def p_lead_by_external_id(c: Ctx):
    c.echoed.add(c.theirs.EXTERNAL_ID)
    r = c.client.get(f"/api/leads/by-external-id/{c.theirs.EXTERNAL_ID}/")
    expect_404(r)
    return [r]


def p_lead_detail(c: Ctx):
    r = c.client.get(f"/api/leads/{c.theirs.lead.pk}/")
    expect_404(r)
    return [r]


def p_activity_list(c: Ctx):
    rs = [
        c.client.get("/api/activities/"),
        c.client.get("/api/activities/", {"lead_external_id": c.theirs.EXTERNAL_ID}),
    ]
    for r in rs:
        assert r.status_code in (200, 400)
        if r.status_code == 200:
            assert c.theirs.activity.pk not in _ids(r)
    return rs


def p_activity_bulk(c: Ctx):
    c.echoed.add(c.theirs.EXTERNAL_ID)
    r = c.client.post(
        "/api/activities/bulk/",
        {
            "items": [
                {
                    "lead_external_id": c.theirs.EXTERNAL_ID,
                    "kind": "email_open",
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "source_event_id": c.theirs.activity.source_event_id,
                }
            ]
        },
        format="json",
    )
    assert r.status_code in (200, 201, 207, 400), r.content[:300]
    return [r]


def p_webhook_ghl(c: Ctx, post_ghl):
    # A genuine GHL delivery for B's location, posted to A's URL.
    r = post_ghl(
        c.mine.slug,
        ghl_event("ContactTagUpdate", location_id="loc-theirs", id="ghl-contact-b", tags=["x"]),
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "location_mismatch"
    return [r]


def p_lead_risk(c: Ctx):
    r = c.client.get(f"/api/leads/{c.theirs.lead.pk}/risk")
    expect_404(r)
    return [r]


def p_lead_score(c: Ctx):
    r = c.client.post(f"/api/leads/{c.theirs.lead.pk}/score")
    expect_404(r)
    return [r]


def p_risk_leads(c: Ctx):
    r = c.client.get("/api/risk/leads")
    assert r.status_code == 200 and c.theirs.lead.pk not in {x.get("id") for x in _results(r)}
    return [r]


def p_intervention_list(c: Ctx):
    r = c.client.get("/api/interventions/")
    assert r.status_code == 200 and c.theirs.intervention.pk not in _ids(r)
    return [r]


def p_intervention_detail(c: Ctx):
    r = c.client.get(f"/api/interventions/{c.theirs.intervention.pk}/")
    expect_404(r)
    return [r]


def p_intervention_outcome(c: Ctx):
    r = c.client.post(
        f"/api/interventions/{c.theirs.intervention.pk}/outcome/",
        {"outcome": "converted"},
        format="json",
    )
    expect_404(r)
    return [r]


def p_lead_interventions(c: Ctx):
    r = c.client.get(f"/api/leads/{c.theirs.lead.pk}/interventions/")
    expect_404(r)
    return [r]


def p_escalation_list(c: Ctx):
    rs = [c.client.get("/api/escalations/"), c.client.get("/api/escalations/", {"status": "open"})]
    for r in rs:
        assert r.status_code == 200 and c.theirs.escalation.pk not in _ids(r)
    return rs


def p_escalation_ack(c: Ctx):
    r = c.client.post(f"/api/escalations/{c.theirs.escalation.pk}/acknowledge/", {}, format="json")
    expect_404(r)
    return [r]


def p_escalation_resolve(c: Ctx):
    r = c.client.post(f"/api/escalations/{c.theirs.escalation.pk}/resolve/", {}, format="json")
    expect_404(r)
    return [r]


def p_events(c: Ctx):
    r = c.client.get("/api/tracking/events/", {"after_id": 0})
    assert r.status_code == 200 and c.theirs.event.pk not in _ids(r)
    return [r]


def p_export(c: Ctx):
    from tracking.exports import DATASETS

    rs = []
    for name in DATASETS:
        r = c.client.get(f"/api/tracking/export/{name}.csv")
        assert r.status_code == 200
        body = b"".join(r.streaming_content).decode()
        rows = list(csv.DictReader(io.StringIO(body)))
        # A has no interventions, messages, events or rollups at all; B has each.
        assert rows == [], f"{name}: {rows[:2]}"
        r.content_text = body
        rs.append(r)
    return rs


def p_timeline(c: Ctx):
    r = c.client.get(f"/api/interventions/{c.theirs.intervention.pk}/timeline/")
    expect_404(r)
    return [r]


def p_success(c: Ctx):
    r = c.client.get("/api/analytics/success/", {"period": "30d"})
    assert r.status_code == 200
    assert r.json()["volume"]["started"] == 0, r.json()["volume"]
    return [r]


def p_impact(c: Ctx):
    r = c.client.get("/api/analytics/impact/", {"period": "30d"})
    assert r.status_code == 200
    arms = r.json()["arms"]
    assert arms["treated"]["episodes"] == 0 and arms["holdout"]["episodes"] == 0
    return [r]


def p_push_register(c: Ctx):
    r = c.client.post(
        "/api/notifications/push-subscriptions/",
        {
            "endpoint": c.theirs.push.endpoint,
            "keys": {"p256dh": "q" * 20, "auth": "b" * 10},
            "lead_external_id": c.theirs.EXTERNAL_ID,
        },
        format="json",
    )
    if c.auth == "key":
        expect_404(r)  # no such lead in A
    else:
        # A's signed-in agent registers their own browser; B's row with that endpoint stays B's.
        assert r.status_code == 201 and r.json()["agent"] is not None
    return [r]


def p_push_delete(c: Ctx):
    r = c.client.post(
        "/api/notifications/push-subscriptions/delete/",
        {"endpoint": c.theirs.push.endpoint},
        format="json",
    )
    expect_404(r)
    return [r]


def _twilio(c: Ctx, path: str, params: dict, token: str = "mine-twilio-token"):
    signature = twilio_signature(auth_token=token, url="http://testserver" + path, params=params)
    return c.client.post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def p_twilio_status(c: Ctx):
    t = c.theirs
    path = f"/api/notifications/callbacks/twilio/{c.mine.slug}/status/?mid={t.message.pk}"
    params = {"MessageSid": t.message.provider_message_id, "MessageStatus": "undelivered"}
    r = _twilio(c, path, params)
    assert r.status_code in (204, 404)
    return [r]


def p_twilio_inbound(c: Ctx):
    path = f"/api/notifications/callbacks/twilio/{c.mine.slug}/inbound/"
    r = _twilio(c, path, {"From": c.theirs.PHONE, "Body": "STOP", "MessageSid": "SMin-b-1"})
    assert r.status_code == 200
    return [r]


def p_in_app(c: Ctx):
    body = json.dumps({"event": "read", "message_id": c.theirs.in_app.pk, "event_id": "e1"})
    ts = str(int(time.time()))
    r = c.client.post(
        f"/api/notifications/callbacks/in-app/{c.mine.slug}/",
        body,
        content_type="application/json",
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign("mine-in-app-secret", ts, body.encode()),
    )
    expect_404(r)
    return [r]


def p_dash_overview(c: Ctx):
    return [c.client.get("/")]


def p_dash_leads(c: Ctx):
    return [
        c.client.get("/leads/"),
        c.client.get("/leads/", {"q": c.theirs.EXTERNAL_ID}),
    ]


def p_dash_lead_detail(c: Ctx):
    r = c.client.get(f"/leads/{c.theirs.lead.pk}/")
    expect_404(r)
    return [r]


def p_dash_escalations(c: Ctx):
    return [c.client.get("/escalations/")]


def p_dash_escalation_row(c: Ctx):
    r = c.client.get(f"/escalations/{c.theirs.escalation.pk}/row/")
    expect_404(r)
    return [r]


def p_dash_agent(c: Ctx):
    return [c.client.get("/me/")]


# (probe, the authentications it runs under)
API = ("key", "session")
PUBLIC = ("public",)
SESSION = ("session",)
PROBES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "churnapp:lead-list": (p_lead_list, API),
    "churnapp:lead-upsert": (p_lead_upsert, API),
    "churnapp:lead-bulk-upsert": (p_lead_bulk, API),
    "churnapp:lead-by-external-id": (p_lead_by_external_id, API),
    "churnapp:lead-detail": (p_lead_detail, API),
    "churnapp:activity-list": (p_activity_list, API),
    "churnapp:activity-bulk-ingest": (p_activity_bulk, API),
    "churnapp:webhook-ghl": (p_webhook_ghl, PUBLIC),
    "churnapp:lead-risk": (p_lead_risk, API),
    "churnapp:lead-score": (p_lead_score, API),
    "churnapp:risk-leads": (p_risk_leads, API),
    "interventions:intervention-list": (p_intervention_list, API),
    "interventions:intervention-detail": (p_intervention_detail, API),
    "interventions:intervention-outcome": (p_intervention_outcome, API),
    "interventions:lead-interventions": (p_lead_interventions, API),
    "interventions:escalation-list": (p_escalation_list, API),
    "interventions:escalation-acknowledge": (p_escalation_ack, API),
    "interventions:escalation-resolve": (p_escalation_resolve, API),
    "tracking:events": (p_events, API),
    "tracking:export": (p_export, API),
    "tracking:intervention-timeline": (p_timeline, API),
    "tracking:analytics-success": (p_success, API),
    "tracking:analytics-impact": (p_impact, API),
    "notifications:push-register": (p_push_register, API),
    "notifications:push-delete": (p_push_delete, API),
    "notifications:twilio-status": (p_twilio_status, PUBLIC),
    "notifications:twilio-inbound": (p_twilio_inbound, PUBLIC),
    "notifications:in-app-callback": (p_in_app, PUBLIC),
    "dashboard:overview": (p_dash_overview, SESSION),
    "dashboard:leads": (p_dash_leads, SESSION),
    "dashboard:lead-detail": (p_dash_lead_detail, SESSION),
    "dashboard:escalations": (p_dash_escalations, SESSION),
    "dashboard:escalation-row": (p_dash_escalation_row, SESSION),
    "dashboard:agent": (p_dash_agent, SESSION),
}


def test_every_route_is_probed_or_exempt_with_a_reason():
    routes = url_names()
    # django-anymail's own views only (not a route of ours that happens to look alike)
    anymail = {name for name, module in routes.items() if module.startswith("anymail.")}
    assert anymail, ANYMAIL_REASON
    unaccounted = set(routes) - set(PROBES) - set(EXEMPT) - anymail
    assert unaccounted == set(), "probe these routes for tenant isolation (or exempt them)"
    stale = (set(PROBES) | set(EXEMPT)) - set(routes)
    assert stale == set(), "these routes no longer exist"


CASES = [(name, auth) for name, (_, auths) in PROBES.items() for auth in auths]


@pytest.mark.parametrize(("route", "auth"), CASES, ids=[f"{n}[{a}]" for n, a in CASES])
def test_tenant_a_cannot_read_or_change_tenant_b(
    route, auth, theirs, mine, key_client, session_client, anon_client, post_ghl
):
    # given tenant B with one of everything, and a client of tenant A
    probe, _ = PROBES[route]
    client = {"key": key_client, "session": session_client, "public": anon_client}[auth]
    before = tenant_snapshot(theirs.tenant)
    ctx = Ctx(client=client, theirs=theirs, mine=mine, auth=auth)

    # when A aims its requests at B
    responses = probe(ctx, post_ghl) if route == "churnapp:webhook-ghl" else probe(ctx)

    # then no answer shows B's data, and none of B's rows changed
    assert responses
    for response in responses:
        assert response.status_code < 500
        text = getattr(response, "content_text", None)
        if text is None:
            text = b"".join(response.streaming_content).decode() if response.streaming else ""
            text = text or response.content.decode(errors="replace")
        for sentinel in set(theirs.sentinels) - ctx.echoed:
            assert sentinel not in text, f"{route} showed tenant B's {sentinel!r}"
    assert tenant_snapshot(theirs.tenant) == before
