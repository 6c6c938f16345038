"""Bad input at every door: the GHL webhook, Twilio and in-app callbacks, push
subscriptions and the lead and activity API. Each bad request gets a clear 4xx with a
message and stores nothing (row counts of leads, activities, webhook events, messages,
tracking events... unchanged)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from churnapp.models import Lead, WebhookEvent
from tests.fakes.inapp import sign
from tests.fakes.twilio import twilio_signature
from tests.fixtures_ghl import ghl_event
from tests.security.conftest import row_counts

pytestmark = pytest.mark.django_db

BIG = 2_621_440 + 1  # one byte over REQUEST_MAX_BODY_BYTES' default
DEEP = 40  # over JSON_MAX_DEPTH (32), under Python's recursion limit
VERY_DEEP = 100_000  # over Python's recursion limit


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_refused(response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:400])
    body = response.json()
    assert body["error"]["message"], body  # a message a person can act on
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


# --- GHL webhook ------------------------------------------------------------------------
def _ghl_signed(ghl_keys, body: bytes) -> dict:
    return {"HTTP_X_GHL_SIGNATURE": ghl_keys.ed25519(body)}


def _payload(**fields) -> dict:
    return ghl_event("ContactCreate", location_id="loc-mine", id="c-1", **fields)


GHL_BAD = {
    # name: (body bytes, content type, sign?, status, code)
    "malformed": (b'{"type": "ContactCreate", ', "application/json", True, 400, "parse_error"),
    "not an object": (b"[1, 2, 3]", "application/json", True, 400, "parse_error"),
    "empty": (b"", "application/json", True, 400, "parse_error"),
    "not utf-8": (b'{"type": "\xff\xfe"}', "application/json", True, 400, "parse_error"),
    "nested 40": (
        ('{"type": "ContactCreate", "x": ' + nested(DEEP) + "}").encode(),
        "application/json",
        True,
        400,
        "parse_error",
    ),
    "nested 100000": (nested(VERY_DEEP).encode(), "application/json", True, 400, "parse_error"),
    "text/plain": (None, "text/plain", True, 415, "unsupported_media_type"),
    "form": (None, "application/x-www-form-urlencoded", True, 415, "unsupported_media_type"),
    "xml": (None, "application/xml", True, 415, "unsupported_media_type"),
    "unsigned": (None, "application/json", False, 401, "signature_missing"),
    "oversized": (None, "application/json", True, 413, "payload_too_large"),
    "NUL in a field": (None, "application/json", True, 400, "parse_error"),
    "missing fields": (b'{"type": "ContactCreate"}', "application/json", True, 400, None),
    "webhookId not a string": (None, "application/json", True, 400, None),
    "bad timestamp": (None, "application/json", True, 400, None),
}


def _ghl_body(name: str) -> bytes:
    body = GHL_BAD[name][0]
    if body is not None:
        return body
    if name == "oversized":
        return json.dumps(_payload(pad="x" * BIG)).encode()
    if name == "NUL in a field":
        return json.dumps(_payload(firstName="a\x00b")).encode()
    if name == "webhookId not a string":
        return json.dumps({**_payload(), "webhookId": 12}).encode()
    if name == "bad timestamp":
        return json.dumps({**_payload(), "timestamp": "yesterday"}).encode()
    return json.dumps(_payload()).encode()


@pytest.mark.parametrize("name", list(GHL_BAD))
def test_ghl_webhook_refuses_bad_bodies_and_stores_nothing(name, mine, ghl_keys):
    body = _ghl_body(name)
    _, content_type, signed, status, code = GHL_BAD[name]
    headers = _ghl_signed(ghl_keys, body) if signed else {}
    before = row_counts()
    response = APIClient().post(
        f"/api/webhooks/ghl/{mine.slug}/", data=body, content_type=content_type, **headers
    )
    assert_refused(response, status, code)
    assert row_counts() == before


def test_ghl_bad_and_replayed_signatures(mine, ghl_keys, ghl_signer):
    client = APIClient()
    url = f"/api/webhooks/ghl/{mine.slug}/"
    body = json.dumps(_payload()).encode()
    other = json.dumps(_payload(firstName="Other")).encode()
    before = row_counts()
    refusals = {
        "signature of another body": {"HTTP_X_GHL_SIGNATURE": ghl_keys.ed25519(other)},
        "not base64": {"HTTP_X_GHL_SIGNATURE": "%%%not-base64%%%"},
        "truncated": {"HTTP_X_GHL_SIGNATURE": ghl_keys.ed25519(body)[:20]},
        "rsa signature of another body": {"HTTP_X_WH_SIGNATURE": ghl_keys.rsa(other)},
    }
    for name, headers in refusals.items():
        response = client.post(url, data=body, content_type="application/json", **headers)
        assert_refused(response, 401), name
    # a stale and a future delivery, correctly signed
    for when in (-3600, 3600):
        ts = (timezone.now() + timezone.timedelta(seconds=when)).isoformat()
        stale = json.dumps({**_payload(), "timestamp": ts}).encode()
        response = client.post(
            url, data=stale, content_type="application/json", **_ghl_signed(ghl_keys, stale)
        )
        assert_refused(response, 401)
    assert row_counts() == before

    # a replay of a good delivery: accepted once, then "duplicate" and nothing new
    first = client.post(
        url, data=body, content_type="application/json", **_ghl_signed(ghl_keys, body)
    )
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    after_first = row_counts()
    assert after_first["webhook_events"] == before["webhook_events"] + 1
    replay = client.post(
        url, data=body, content_type="application/json", **_ghl_signed(ghl_keys, body)
    )
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert row_counts() == after_first
    assert WebhookEvent.objects.filter(webhook_id=json.loads(body)["webhookId"]).count() == 1


# --- Provider callbacks -------------------------------------------------------------------
def _twilio_post(client, path, params, *, token="mine-twilio-token", content_type=None):
    signature = twilio_signature(auth_token=token, url="http://testserver" + path, params=params)
    return client.post(
        path,
        urlencode(params) if content_type is None else json.dumps(params),
        content_type=content_type or "application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


@pytest.mark.parametrize("kind", ["status", "inbound"])
def test_twilio_callbacks_refuse_bad_requests(kind, mine, theirs):
    client = APIClient()
    path = f"/api/notifications/callbacks/twilio/{mine.slug}/{kind}/"
    params = {
        "MessageSid": "SM1",
        "MessageStatus": "delivered",
        "From": "+15125550199",
        "Body": "STOP",
    }
    before = row_counts()
    assert_refused(_twilio_post(client, path, params, content_type="application/json"), 415)
    assert_refused(_twilio_post(client, path, params, token="wrong"), 401, "webhook_rejected")
    # tenant B's token does not open tenant A's door
    assert_refused(_twilio_post(client, path, params, token="theirs-twilio-token"), 401)
    unsigned = client.post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded"
    )
    assert_refused(unsigned, 401)
    huge = client.post(path, "Body=" + "x" * BIG, content_type="application/x-www-form-urlencoded")
    assert_refused(huge, 413, "payload_too_large")
    unknown = f"/api/notifications/callbacks/twilio/no-such-tenant/{kind}/"
    assert_refused(_twilio_post(client, unknown, params), 404)
    assert row_counts() == before


def test_twilio_inbound_replay_is_stored_once(mine):
    client = APIClient()
    path = f"/api/notifications/callbacks/twilio/{mine.slug}/inbound/"
    params = {"From": "+15125550199", "Body": "Is the house still available?", "MessageSid": "SMr1"}
    assert _twilio_post(client, path, params).status_code == 200
    once = row_counts()
    assert _twilio_post(client, path, params).status_code == 200
    assert row_counts() == once


def _in_app(
    client,
    slug,
    body: bytes,
    *,
    secret="mine-in-app-secret",
    ts=None,
    content_type="application/json",
):
    ts = ts or str(int(time.time()))
    return client.post(
        f"/api/notifications/callbacks/in-app/{slug}/",
        body,
        content_type=content_type,
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign(secret, ts, body),
    )


def test_in_app_callback_refuses_bad_requests(mine, theirs):
    client = APIClient()
    slug = mine.slug
    good = json.dumps({"event": "read", "message_id": 1, "event_id": "e1"}).encode()
    before = row_counts()
    cases = [
        (_in_app(client, slug, good, content_type="text/plain"), 415),
        (_in_app(client, slug, b'{"event": ', secret="mine-in-app-secret"), 400),
        (_in_app(client, slug, nested(VERY_DEEP).encode()), 400),
        (_in_app(client, slug, ('{"event": "read", "x": ' + nested(DEEP) + "}").encode()), 400),
        (
            _in_app(client, slug, b'{"event": "read", "message_id": "x\\u0000", "event_id": "e"}'),
            400,
        ),
        (_in_app(client, slug, b'{"event": "shred", "message_id": 1, "event_id": "e"}'), 400),
        (_in_app(client, slug, b"[]"), 400),
        (_in_app(client, slug, good, secret="wrong"), 401),
        (_in_app(client, slug, good, secret="theirs-in-app-secret"), 401),
        (_in_app(client, slug, good, ts=str(int(time.time()) - 3600)), 401),
        (_in_app(client, slug, good, ts="not-a-time"), 401),
        (_in_app(client, slug, b'{"pad": "' + b"x" * BIG + b'"}'), 413),
    ]
    for response, status in cases:
        assert_refused(response, status)
    assert row_counts() == before


def test_in_app_replay_records_one_event(mine, theirs):
    from churnapp.factories import LeadFactory
    from notifications.models import Message

    message = Message.objects.create(
        tenant=mine,
        lead=LeadFactory(tenant=mine),
        channel="in_app",
        idempotency_key="mine-ia",
        status="sent",
        sent_at=timezone.now(),
    )
    body = json.dumps({"event": "read", "message_id": message.pk, "event_id": "r1"}).encode()
    client = APIClient()
    assert _in_app(client, mine.slug, body).status_code == 204
    once = row_counts()
    # the same signed request again (a replay within the freshness window)
    assert _in_app(client, mine.slug, body).status_code == 204
    assert row_counts() == once


# --- The lead and activity API -------------------------------------------------------------
BAD_PHONES = [
    "12345",
    "not a phone",
    "+1 555 0100",
    "+999 1234567",
    "555-0100",
    "+1" * 20,
    "☎☎☎",
    "+1 (512) 555-01999999",
]
BAD_EMAILS = [
    "a@",
    "@b.com",
    "a b@c.com",
    "a@b",
    "x" * 250 + "@e.com",
    "a@b..com",
    "<script>@x.com",
    "a@b.com\nBcc: c@d.com",
]
BAD_TIMEZONES = [
    "Mars/Olympus",
    "UTC+5",
    "../../etc/passwd",
    "America/New York",
    "america/chicago",
    "Z",
    "+05:00",
]
BAD_FIELDS = (
    [("phone", v) for v in BAD_PHONES]
    + [("email", v) for v in BAD_EMAILS]
    + [("timezone", v) for v in BAD_TIMEZONES]
    + [
        ("first_name", "a\x00b"),
        ("first_name", "x" * 101),
        ("custom_fields", {"k": "a\x00b"}),
        ("custom_fields", json.loads('{"a": ' + nested(DEEP) + "}")),
        ("budget", "lots"),
        ("status", "vip"),
        ("crm_created_at", "2026-11-01T10:00:00"),  # naive
        ("dnd_channels", ["pigeon"]),
        ("tags", "not-a-list"),
    ]
)


@pytest.mark.parametrize(
    ("field", "value"), BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)]
)
def test_bad_lead_fields_are_refused_and_nothing_is_stored(api_client, field, value):
    before = row_counts()
    one = api_client.put(
        "/api/leads/upsert/", {"external_id": "bad-1", field: value}, format="json"
    )
    body = assert_refused(one, 400)
    if body["error"]["code"] != "parse_error":  # refused by the parser: no field yet
        assert field in json.dumps(body)  # the answer names the field
    # in a batch with a good lead: all or nothing
    bulk = api_client.post(
        "/api/leads/bulk/",
        {"items": [{"external_id": "good-1"}, {"external_id": "bad-1", field: value}]},
        format="json",
    )
    assert_refused(bulk, 400)
    assert row_counts() == before


def test_valid_lead_fields_are_normalised(api_client):
    response = api_client.put(
        "/api/leads/upsert/",
        {
            "external_id": "ok-1",
            "phone": "(512) 555-0199",
            "email": "ok@example.com",
            "timezone": "America/Chicago",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Lead.objects.get(external_id="ok-1").phone == "+15125550199"


RAW_BAD = {
    # name: (path, body, content type, status)
    "lead malformed": ("/api/leads/upsert/", b'{"external_id": ', "application/json", 400),
    "lead nested 100000": (
        "/api/leads/upsert/",
        nested(VERY_DEEP).encode(),
        "application/json",
        400,
    ),
    "lead text/plain": ("/api/leads/upsert/", b'{"external_id": "t"}', "text/plain", 415),
    "lead xml": (
        "/api/leads/upsert/",
        b"<lead><external_id>t</external_id></lead>",
        "application/xml",
        415,
    ),
    "lead oversized": ("/api/leads/upsert/", None, "application/json", 413),
    "lead array": ("/api/leads/upsert/", b"[]", "application/json", 400),
    "bulk not a list": ("/api/leads/bulk/", b'{"items": {"a": 1}}', "application/json", 400),
    "bulk too many": ("/api/leads/bulk/", None, "application/json", 400),
    "activities malformed": ("/api/activities/bulk/", b"{", "application/json", 400),
    "activities text/csv": ("/api/activities/bulk/", b"a,b\n1,2", "text/csv", 415),
    "activities nested 40": ("/api/activities/bulk/", None, "application/json", 400),
    "activities bad kind": ("/api/activities/bulk/", None, "application/json", 400),
    "push bad endpoint": ("/api/notifications/push-subscriptions/", None, "application/json", 400),
    "push text/plain": ("/api/notifications/push-subscriptions/", b"x", "text/plain", 415),
}


def _raw_body(name: str) -> bytes:
    body = RAW_BAD[name][1]
    if body is not None:
        return body
    if name == "lead oversized":
        return json.dumps({"external_id": "big", "first_name": "x" * BIG}).encode()
    if name == "bulk too many":
        return json.dumps({"items": [{"external_id": f"l{i}"} for i in range(1001)]}).encode()
    activity = {
        "lead_external_id": "l1",
        "kind": "email_open",
        "occurred_at": "2026-11-20T10:00:00Z",
        "source_event_id": "e1",
    }
    if name == "activities nested 40":
        return json.dumps({"items": [{**activity, "payload": json.loads(nested(DEEP))}]}).encode()
    if name == "activities bad kind":
        return json.dumps({"items": [{**activity, "kind": "teleport"}]}).encode()
    return json.dumps(
        {"endpoint": "javascript:alert(1)", "keys": {"p256dh": "p", "auth": "a"}}
    ).encode()


@pytest.mark.parametrize("name", list(RAW_BAD))
def test_bad_api_bodies_are_refused_and_nothing_is_stored(api_client, name):
    path, _, content_type, status = RAW_BAD[name]
    before = row_counts()
    response = api_client.post(path, data=_raw_body(name), content_type=content_type)
    assert_refused(response, status)
    assert row_counts() == before
