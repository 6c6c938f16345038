"""Webhook secrets are per tenant: a callback signed with tenant A's Twilio auth token or
in-app secret is refused at tenant B's door, and A's door never reaches B's messages. A
GHL delivery (GHL signs with one key for everyone) is bound to a tenant by locationId."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from rest_framework.test import APIClient

from tests.fakes.inapp import sign
from tests.fakes.twilio import twilio_signature
from tests.fixtures_ghl import ghl_event
from tests.security.conftest import row_counts, tenant_snapshot

pytestmark = pytest.mark.django_db


def _twilio(path: str, params: dict, token: str):
    signature = twilio_signature(auth_token=token, url="http://testserver" + path, params=params)
    return APIClient().post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def _in_app(slug: str, message_id: int, secret: str):
    body = json.dumps({"event": "read", "message_id": message_id, "event_id": "x"}).encode()
    ts = str(int(time.time()))
    return APIClient().post(
        f"/api/notifications/callbacks/in-app/{slug}/",
        body,
        content_type="application/json",
        HTTP_X_TIMESTAMP=ts,
        HTTP_X_SIGNATURE=sign(secret, ts, body),
    )


def test_tenant_a_secrets_do_not_open_tenant_b(mine, theirs):
    b = theirs.tenant
    before, counts = tenant_snapshot(b), row_counts()
    status = f"/api/notifications/callbacks/twilio/{b.slug}/status/?mid={theirs.message.pk}"
    params = {"MessageSid": theirs.message.provider_message_id, "MessageStatus": "undelivered"}
    # A's Twilio token at B's door
    r = _twilio(status, params, "mine-twilio-token")
    assert r.status_code == 401 and r.json()["error"]["code"] == "webhook_rejected"
    inbound = f"/api/notifications/callbacks/twilio/{b.slug}/inbound/"
    r = _twilio(
        inbound, {"From": theirs.PHONE, "Body": "STOP", "MessageSid": "SMx"}, "mine-twilio-token"
    )
    assert r.status_code == 401
    # A's in-app secret at B's door
    assert _in_app(b.slug, theirs.in_app.pk, "mine-in-app-secret").status_code == 401
    assert tenant_snapshot(b) == before and row_counts() == counts

    # and B's own secrets work at B's door (the refusals above were about the secret)
    assert _twilio(status, params, "theirs-twilio-token").status_code == 204
    assert _in_app(b.slug, theirs.in_app.pk, "theirs-in-app-secret").status_code == 204


def test_a_tenant_without_its_own_secret_refuses_callbacks(settings, tenant, theirs):
    # No ChannelConfig secret and no deployment-wide fallback: nothing can be verified.
    settings.IN_APP_WEBHOOK_SECRET = ""
    settings.TWILIO_AUTH_TOKEN = ""
    counts = row_counts()
    r = _in_app(tenant.slug, theirs.in_app.pk, "")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_configured"
    r = _twilio(f"/api/notifications/callbacks/twilio/{tenant.slug}/inbound/", {"Body": "hi"}, "x")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_configured"
    assert row_counts() == counts


def test_ghl_deliveries_are_bound_to_the_tenants_location(mine, theirs, post_ghl):
    counts = row_counts()
    r = post_ghl(mine.slug, ghl_event("ContactCreate", location_id="loc-theirs", id="c-b"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "location_mismatch"
    assert row_counts() == counts
    r = post_ghl(mine.slug, ghl_event("ContactCreate", location_id="loc-mine", id="c-a"))
    assert r.status_code == 200


def test_a_tenant_without_a_ghl_location_accepts_no_ghl_delivery(tenant, post_ghl):
    # GHL signs every account's deliveries with one key: any GHL account could aim its
    # webhooks at this URL. Without a location to match, nothing is accepted.
    assert not tenant.ghl_location_id
    counts = row_counts()
    r = post_ghl(tenant.slug, ghl_event("ContactCreate", location_id="loc-anyone", id="c-x"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "location_not_configured"
    assert row_counts() == counts
