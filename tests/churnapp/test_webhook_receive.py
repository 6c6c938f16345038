"""The GHL webhook endpoint: real signatures, and every refusal stores nothing."""

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.utils import timezone

from churnapp.models import WebhookEvent, WebhookStatus
from tests.churnapp.conftest import ghl_event


@pytest.fixture
def acme(tenant):
    tenant.ghl_location_id = "loc-acme"
    tenant.save()
    return tenant


def _refused(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    assert WebhookEvent.objects.count() == 0
    return error


def test_valid_ed25519_is_stored_and_enqueued(acme, post_ghl, django_capture_on_commit_callbacks):
    payload = ghl_event("ContactCreate", id="c-1", firstName="Ann")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_ghl("acme", payload)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted"
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.event_type, event.signature_scheme) == (
        payload["webhookId"],
        "ContactCreate",
        "ed25519",
    )
    assert event.payload == payload and event.status == WebhookStatus.RECEIVED
    assert event.tenant == acme
    assert len(callbacks) == 1  # the processing task, sent only after commit


def test_valid_legacy_rsa_is_accepted(acme, post_ghl):
    response = post_ghl("acme", ghl_event("ContactUpdate", id="c-1"), scheme="rsa")
    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.get().signature_scheme == "rsa"


def test_ed25519_is_preferred_when_both_are_sent(acme, post_ghl, ghl_keys):
    body = json.dumps(ghl_event("ContactUpdate", id="c-1")).encode()
    # a valid Ed25519 signature and a broken RSA one: Ed25519 decides
    response = post_ghl(
        "acme", body, headers={"x-wh-signature": base64.b64encode(b"junk").decode()}
    )
    assert response.status_code == 200
    assert WebhookEvent.objects.get().signature_scheme == "ed25519"


def test_invalid_ed25519_is_refused_even_with_a_valid_rsa(acme, post_ghl, ghl_keys):
    body = json.dumps(ghl_event("ContactUpdate", id="c-1")).encode()
    response = post_ghl(
        "acme",
        body,
        scheme="rsa",
        headers={"x-ghl-signature": base64.b64encode(b"\0" * 64).decode()},
    )
    _refused(response, 401, "signature_invalid")


def test_signature_of_another_key_is_401(acme, post_ghl):
    body = json.dumps(ghl_event("ContactCreate", id="c-1")).encode()
    stranger = ed25519.Ed25519PrivateKey.generate()
    signature = base64.b64encode(stranger.sign(body)).decode()
    _refused(
        post_ghl("acme", body, scheme="none", headers={"x-ghl-signature": signature}),
        401,
        "signature_invalid",
    )


def test_tampered_body_is_401(acme, post_ghl, ghl_keys):
    body = json.dumps(ghl_event("ContactCreate", id="c-1", email="a@x.com")).encode()
    signature = ghl_keys.ed25519(body)
    tampered = body.replace(b"a@x.com", b"b@x.com")
    _refused(
        post_ghl("acme", tampered, scheme="none", headers={"x-ghl-signature": signature}),
        401,
        "signature_invalid",
    )


def test_reserialized_json_does_not_verify(acme, post_ghl, ghl_keys):
    # Same JSON value, different bytes: the raw body is what is signed.
    payload = ghl_event("ContactCreate", id="c-1")
    signature = ghl_keys.ed25519(json.dumps(payload).encode())
    spaced = json.dumps(payload, indent=2).encode()
    _refused(post_ghl("acme", spaced, scheme="none", headers={"x-ghl-signature": signature}), 401)


def test_missing_signature_is_401(acme, post_ghl):
    _refused(post_ghl("acme", ghl_event("ContactCreate"), scheme="none"), 401, "signature_missing")


def test_not_base64_signature_is_401(acme, post_ghl):
    _refused(
        post_ghl(
            "acme", ghl_event("ContactCreate"), scheme="none", headers={"x-ghl-signature": "%%%"}
        ),
        401,
    )


def test_no_configured_key_is_503(acme, post_ghl, settings):
    settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY = ""
    _refused(post_ghl("acme", ghl_event("ContactCreate")), 503, "not_configured")


def test_replayed_webhook_id_is_answered_duplicate_and_stored_once(acme, post_ghl):
    payload = ghl_event("InboundMessage", contactId="c-1", messageId="m-1", messageType="SMS")
    first = post_ghl("acme", payload)
    second = post_ghl("acme", payload)
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == "accepted"
    assert second.json() == {
        "status": "duplicate",
        "webhook_event_id": first.json()["webhook_event_id"],
    }
    assert WebhookEvent.objects.count() == 1


def test_a_webhook_id_seen_in_another_tenant_is_not_a_duplicate_here(acme, other_tenant, post_ghl):
    # given a delivery stored for acme
    other_tenant.ghl_location_id = "loc-other"
    other_tenant.save()
    payload = ghl_event("ContactCreate", id="c-1")
    first = post_ghl("acme", payload)
    # when a delivery with the same webhookId arrives for the other tenant's location
    second = post_ghl("other", {**payload, "locationId": "loc-other"})
    # then it is stored for that tenant, and acme's event id is never answered to it
    assert first.json()["status"] == second.json()["status"] == "accepted"
    assert second.json()["webhook_event_id"] != first.json()["webhook_event_id"]
    assert WebhookEvent.objects.filter(tenant=other_tenant).count() == 1
    # and a replay within a tenant is still a duplicate of that tenant's own event
    again = post_ghl("other", {**payload, "locationId": "loc-other"})
    assert again.json() == {
        "status": "duplicate",
        "webhook_event_id": second.json()["webhook_event_id"],
    }


@pytest.mark.parametrize(
    ("minutes", "style"),
    [(-10, "iso"), (-10, "epoch-ms"), (10, "iso")],
)
def test_stale_or_future_timestamp_is_401(acme, post_ghl, minutes, style):
    # Computed when the test runs: at collection time a slow suite could reach the test
    # after "ten minutes ahead" is no longer beyond the five-minute window.
    when = timezone.now() + dt.timedelta(minutes=minutes)
    timestamp = when.isoformat() if style == "iso" else int(when.timestamp() * 1000)
    error = _refused(post_ghl("acme", ghl_event("ContactCreate", timestamp=timestamp)), 401)
    assert error["code"] in ("webhook_stale", "webhook_from_future")


def test_epoch_millisecond_timestamp_is_accepted(acme, post_ghl):
    fresh = int(timezone.now().timestamp() * 1000)
    assert post_ghl("acme", ghl_event("ContactCreate", id="c", timestamp=fresh)).status_code == 200


def test_unparseable_timestamp_is_400(acme, post_ghl):
    error = _refused(post_ghl("acme", ghl_event("ContactCreate", timestamp="last tuesday")), 400)
    assert "timestamp" in error["details"]


def test_malformed_json_is_400(acme, post_ghl):
    _refused(post_ghl("acme", b'{"type": "ContactCreate",'), 400, "parse_error")


def test_json_that_is_not_an_object_is_400(acme, post_ghl):
    _refused(post_ghl("acme", b"[1, 2]"), 400, "parse_error")


@pytest.mark.parametrize("field", ["type", "webhookId", "timestamp", "locationId"])
def test_missing_required_field_is_400(acme, post_ghl, field):
    payload = ghl_event("ContactCreate")
    del payload[field]
    error = _refused(post_ghl("acme", payload), 400)
    assert field in error["details"]


def test_wrong_location_is_403(acme, post_ghl):
    _refused(post_ghl("acme", ghl_event("ContactCreate", location_id="loc-other")), 403)


def test_tenant_without_location_accepts_no_delivery(tenant, post_ghl):
    # GHL signs every account's deliveries with one key: any GHL account could aim its
    # webhooks here, so a tenant with no location to match accepts none.
    _refused(
        post_ghl("acme", ghl_event("ContactCreate", location_id="loc-any")),
        403,
        "location_not_configured",
    )


def test_unknown_tenant_is_404(acme, post_ghl):
    _refused(post_ghl("nobody", ghl_event("ContactCreate")), 404, "not_found")


def test_unknown_tenant_without_signature_learns_nothing(post_ghl, db):
    # an unsigned caller gets 401 whether or not the slug exists
    _refused(post_ghl("nobody", ghl_event("ContactCreate"), scheme="none"), 401)


def test_webhook_needs_no_api_key_and_ignores_one(acme, post_ghl):
    response = post_ghl(
        "acme", ghl_event("ContactCreate", id="c"), headers={"Authorization": "Api-Key bogus"}
    )
    assert response.status_code == 200
