"""Inbound GHL webhooks: verify the signature on the raw body, check freshness, tenant
and replay, store the event (the inbox), and process it later in a task."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from churnapp.exceptions import (
    ApplicationError,
    ForbiddenError,
    NotFoundError,
    ServiceMisconfigured,
    WebhookRejected,
)
from churnapp.models import Tenant, WebhookEvent, WebhookStatus
from churnapp.normalize import json_loads_bounded, timestamp_parse

logger = logging.getLogger(__name__)

PROVIDER_GHL = "ghl"
ED25519_HEADER = "x-ghl-signature"
RSA_HEADER = "x-wh-signature"
REQUIRED_FIELDS = ("type", "webhookId", "timestamp", "locationId")


@dataclass(frozen=True)
class WebhookReceipt:
    event: WebhookEvent
    duplicate: bool


@functools.lru_cache(maxsize=8)
def _public_key(pem: str):
    # Environment variables often carry PEMs with literal "\n".
    return serialization.load_pem_public_key(pem.replace("\\n", "\n").strip().encode())


def _signature_bytes(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("The signature header is not valid base64.")


def ghl_signature_verify(*, body: bytes, headers: dict[str, str]) -> str:
    """Verify GHL's signature over the raw body; return the scheme used ("ed25519" or
    "rsa"). Ed25519 (`x-ghl-signature`) is preferred when present and configured; the
    legacy RSA-SHA256 (`x-wh-signature`) is accepted otherwise. WebhookRejected if
    neither verifies."""
    headers = {k.lower(): v for k, v in headers.items()}
    ed_sig, rsa_sig = headers.get(ED25519_HEADER), headers.get(RSA_HEADER)
    if not ed_sig and not rsa_sig:
        raise WebhookRejected(
            f"Missing signature: send {ED25519_HEADER} (Ed25519) or {RSA_HEADER} (RSA).",
            code="signature_missing",
        )
    ed_pem = settings.GHL_WEBHOOK_ED25519_PUBLIC_KEY
    rsa_pem = settings.GHL_WEBHOOK_RSA_PUBLIC_KEY
    if ed_sig and ed_pem:
        key = _public_key(ed_pem)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ServiceMisconfigured("GHL_WEBHOOK_ED25519_PUBLIC_KEY is not an Ed25519 key.")
        try:
            key.verify(_signature_bytes(ed_sig), body)
        except InvalidSignature:
            raise WebhookRejected(
                f"The {ED25519_HEADER} signature does not match the body.",
                code="signature_invalid",
            )
        return "ed25519"
    if rsa_sig and rsa_pem:
        key = _public_key(rsa_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ServiceMisconfigured("GHL_WEBHOOK_RSA_PUBLIC_KEY is not an RSA key.")
        try:
            key.verify(_signature_bytes(rsa_sig), body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise WebhookRejected(
                f"The {RSA_HEADER} signature does not match the body.", code="signature_invalid"
            )
        return "rsa"
    raise ServiceMisconfigured(
        "No GHL webhook public key is configured for the signature sent; nothing was stored."
    )


def _payload_parse(body: bytes) -> dict:
    try:
        payload = json_loads_bounded(body)
    except ValueError as exc:
        raise ApplicationError(f"The body is not acceptable JSON: {exc}", code="parse_error")
    if not isinstance(payload, dict):
        raise ApplicationError("The body must be a JSON object.", code="parse_error")
    missing = [f for f in REQUIRED_FIELDS if payload.get(f) in (None, "")]
    if missing:
        raise ApplicationError(
            f"Missing required field(s): {', '.join(missing)}.",
            details={f: "required" for f in missing},
        )
    for name in ("type", "webhookId", "locationId"):
        if not isinstance(payload[name], str):
            raise ApplicationError(f"{name} must be a string.", details={name: "must be a string"})
    if len(payload["webhookId"]) > 128 or len(payload["type"]) > 64:
        raise ApplicationError("webhookId or type is too long.")
    return payload


def _freshness_check(raw_timestamp, now: dt.datetime) -> dt.datetime:
    try:
        sent_at = timestamp_parse(raw_timestamp)
    except ValueError as exc:
        raise ApplicationError(f"timestamp: {exc}", details={"timestamp": str(exc)})
    max_age = dt.timedelta(seconds=settings.GHL_WEBHOOK_MAX_AGE_SECONDS)
    if sent_at < now - max_age:
        raise WebhookRejected(
            f"The webhook is older than {settings.GHL_WEBHOOK_MAX_AGE_SECONDS} s "
            f"(timestamp {sent_at.isoformat()}); refusing a possible replay.",
            code="webhook_stale",
        )
    if sent_at > now + max_age:
        raise WebhookRejected(
            f"The webhook timestamp {sent_at.isoformat()} is in the future.",
            code="webhook_from_future",
        )
    return sent_at


def ghl_webhook_receive(
    *, tenant_slug: str, body: bytes, headers: dict[str, str]
) -> WebhookReceipt:
    """Verify and store one GHL delivery; enqueue its processing after commit.

    Errors (each stores nothing): WebhookRejected (401: bad or missing signature, stale
    or future timestamp), NotFoundError (unknown tenant), ApplicationError (400:
    malformed JSON, missing fields), ForbiddenError (403: locationId of another
    location, or the tenant has no GHL location id). A repeated webhookId is not an error: the stored event is returned with
    duplicate=True so the caller answers 200 and GHL stops retrying.
    """
    # The signature first: an unsigned caller learns nothing, not even which slugs exist.
    scheme = ghl_signature_verify(body=body, headers=headers)
    tenant = Tenant.objects.filter(slug=tenant_slug, is_active=True).first()
    if tenant is None:
        raise NotFoundError(f"No active tenant {tenant_slug!r}.")
    payload = _payload_parse(body)
    _freshness_check(payload["timestamp"], timezone.now())
    if not tenant.ghl_location_id:
        # GHL signs every account's deliveries with the same key: without a location to
        # match, any GHL account could point its webhooks here and write into this tenant.
        raise ForbiddenError(
            f"Tenant {tenant.slug!r} has no GHL location id; set it (admin or "
            "`tenant_create --ghl-location-id`) before receiving GHL webhooks.",
            code="location_not_configured",
        )
    if payload["locationId"] != tenant.ghl_location_id:
        raise ForbiddenError(
            f"locationId {payload['locationId']!r} does not belong to tenant {tenant.slug!r}.",
            code="location_mismatch",
        )
    return _store(tenant=tenant, payload=payload, scheme=scheme)


def _store(*, tenant: Tenant, payload: dict, scheme: str) -> WebhookReceipt:
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                tenant=tenant,
                provider=PROVIDER_GHL,
                webhook_id=payload["webhookId"],
                event_type=payload["type"],
                payload=payload,
                signature_scheme=scheme,
            )
            # robust: the event is stored; if the broker is down, the sweeper enqueues it.
            transaction.on_commit(lambda: _enqueue(event.pk), robust=True)
    except IntegrityError:
        existing = WebhookEvent.objects.get(
            tenant=tenant, provider=PROVIDER_GHL, webhook_id=payload["webhookId"]
        )
        return WebhookReceipt(event=existing, duplicate=True)
    return WebhookReceipt(event=event, duplicate=False)


def _enqueue(webhook_event_id: int) -> None:
    from churnapp.tasks import webhook_process  # tasks import services, not the reverse

    webhook_process.delay(webhook_event_id)


def webhook_event_process(*, webhook_event_id: int) -> WebhookEvent | None:
    """Apply a stored event once: processed, ignored (a type we do not use) or failed
    with the reason. Safe to call again: a finished event is left alone."""
    from churnapp.services.ghl_events import ghl_event_apply

    with transaction.atomic():
        event = (
            # Lock only this row, and without KEY strength: a plain FOR UPDATE would also
            # lock the joined tenant row, which every concurrent insert of a child row
            # (the next webhook being stored) holds in KEY SHARE, so SKIP LOCKED would
            # skip the event and leave it unprocessed until the sweeper.
            WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",), no_key=True)
            .select_related("tenant")
            .filter(pk=webhook_event_id)
            .first()
        )
        if event is None:
            # Gone, or another worker holds it right now and will finish it.
            return None
        if event.status in (WebhookStatus.PROCESSED, WebhookStatus.IGNORED):
            return event
        try:
            with transaction.atomic():
                outcome = ghl_event_apply(
                    tenant=event.tenant, event_type=event.event_type, payload=event.payload
                )
        except ApplicationError as exc:
            event.status, event.error = WebhookStatus.FAILED, f"{exc.message} {exc.details or ''}"
        except OperationalError:
            # The database may answer next time: the task retries; the row stays received.
            raise
        except Exception as exc:
            # Kept on the row for the admin's "reprocess"; the traceback goes to the log.
            logger.exception("webhook event %s failed", event.pk)
            event.status, event.error = WebhookStatus.FAILED, f"{type(exc).__name__}: {exc}"
        else:
            event.status = WebhookStatus.PROCESSED if outcome.applied else WebhookStatus.IGNORED
            event.error = outcome.note
        event.processed_at = timezone.now()
        event.save(update_fields=["status", "error", "processed_at"])
        return event


def webhook_event_reprocess(*, webhook_event: WebhookEvent) -> WebhookEvent:
    """Reset a stored event to received and enqueue it again (the admin action)."""
    with transaction.atomic():
        WebhookEvent.objects.filter(pk=webhook_event.pk).update(
            status=WebhookStatus.RECEIVED, processed_at=None, error=""
        )
        transaction.on_commit(lambda: _enqueue(webhook_event.pk), robust=True)
    webhook_event.refresh_from_db()
    return webhook_event


def webhook_events_sweep(*, older_than: dt.timedelta = dt.timedelta(minutes=5)) -> int:
    """Re-enqueue events still `received` after `older_than` (an enqueue lost in a
    crash between commit and publish). Returns how many were enqueued."""
    cutoff = timezone.now() - older_than
    ids = list(
        WebhookEvent.objects.filter(status=WebhookStatus.RECEIVED, received_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )
    for pk in ids:
        _enqueue(pk)
    return len(ids)
