"""Twilio Programmable Messaging: SMS over the REST API, with status callbacks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from functools import cached_property
from urllib.parse import urlencode

from notifications.backends.base import (
    ConfigurationError,
    HttpBackend,
    PermanentError,
    SendResult,
)
from notifications.recipients import public_reverse

# Error codes that mean this number must not be texted again.
OPT_OUT_ERRORS = {21610}
# Twilio's statuses mapped onto ours; None leaves the message where it is.
STATUS_MAP = {
    "accepted": None,
    "scheduled": None,
    "queued": None,
    "sending": None,
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


class TwilioSmsBackend(HttpBackend):
    channel = "sms"
    provider = "twilio"

    def credentials(self) -> tuple[str, str]:
        sid = self.option("account_sid", "TWILIO_ACCOUNT_SID")
        token = self.option("auth_token", "TWILIO_AUTH_TOKEN")
        if not sid or not token:
            raise ConfigurationError("Twilio account SID and auth token are not configured")
        return sid, token

    def messages_url(self, suffix: str = ".json") -> str:
        sid, _ = self.credentials()
        base = str(self.option("base_url", "TWILIO_API_BASE_URL")).rstrip("/")
        return f"{base}/2010-04-01/Accounts/{sid}/Messages{suffix}"

    def rate_limit_key(self, message) -> str:
        return f"twilio:{self.credentials()[0]}"

    def send(self, message) -> SendResult:
        # A previous attempt that got a 5xx or lost its answer may have gone out: ask
        # Twilio before posting again.
        if message.attempts > 1:
            found = self.reconcile(message)
            if found is not None:
                return found
        return super().send(message)

    @cached_property
    def status_callback_url(self) -> str:
        # Reversed once per backend, which a batch's messages share: 0.016 ms CPU a time,
        # ~2% of a batched send's worker CPU.
        return public_reverse("notifications:twilio-status", tenant_slug=self.tenant.slug)

    def build_payload(self, message) -> dict:
        if not message.to_address:
            raise PermanentError("the recipient has no phone number")
        payload = {
            "To": message.to_address,
            "Body": message.body_text,
            "StatusCallback": self.status_callback_url + "?" + urlencode({"mid": message.pk}),
        }
        service_sid = self.option("messaging_service_sid", "TWILIO_MESSAGING_SERVICE_SID")
        from_number = self.option("from_number", "TWILIO_FROM_NUMBER")
        if service_sid:
            payload["MessagingServiceSid"] = service_sid
        elif from_number:
            payload["From"] = from_number
        else:
            raise ConfigurationError("no Twilio From number or Messaging Service SID")
        return payload

    def post(self, message, payload):
        response = self.http("POST", self.messages_url(), data=payload, auth=self.credentials())
        if response.status_code == 400:
            body = _json(response)
            code = body.get("code")
            if code in OPT_OUT_ERRORS:
                raise PermanentError(
                    f"Twilio {code}: {body.get('message', '')}",
                    status_code=400,
                    code=str(code),
                    suppress_reason="provider_opt_out",
                )
        self.raise_for_status(response)
        return response

    def parse_response(self, message, response) -> SendResult:
        return _result(_json(response), response.status_code)

    def reconcile(self, message) -> SendResult | None:
        if message.provider_message_id:
            response = self.http(
                "GET",
                self.messages_url(f"/{message.provider_message_id}.json"),
                auth=self.credentials(),
            )
            if response.status_code == 404:
                return None
            self.raise_for_status(response)
            return _result(_json(response), response.status_code)
        if not message.claimed_at or not message.to_address:
            return None
        # No SID: the answer was lost. Look for a message to this number with our body,
        # created since we first claimed it.
        since = message.claimed_at - dt.timedelta(minutes=5)
        params = {"To": message.to_address, "DateSent>": since.date().isoformat(), "PageSize": 50}
        response = self.http("GET", self.messages_url(), params=params, auth=self.credentials())
        self.raise_for_status(response)
        items = _json(response).get("messages") or []
        # A message word for word an earlier one to the same number (a weekly check-in)
        # must not be taken for it: skip what another message of ours already holds.
        taken = _sids_held_elsewhere(message, [item.get("sid") or "" for item in items])
        for item in items:
            created = _parse_date(item.get("date_created"))
            if (
                item.get("body") == message.body_text
                and item.get("sid") not in taken
                and (created is None or created >= since)
            ):
                return _result(item, response.status_code)
        return None


def _sids_held_elsewhere(message, sids: list[str]) -> set[str]:
    from notifications.models import Message

    return set(
        Message.objects.filter(
            tenant_id=message.tenant_id, provider="twilio", provider_message_id__in=sids
        )
        .exclude(pk=message.pk)
        .values_list("provider_message_id", flat=True)
    )


def _json(response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {}


def _parse_date(value) -> dt.datetime | None:
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def _result(body: dict, status_code: int) -> SendResult:
    sid = body.get("sid") or ""
    if not sid:
        raise PermanentError(f"Twilio answered without a message SID: {str(body)[:300]}")
    status = STATUS_MAP.get(body.get("status") or "", None)
    if status == "failed":
        raise PermanentError(
            f"Twilio reports {body.get('status')} ({body.get('error_code')}): "
            f"{body.get('error_message') or ''}",
            code=str(body.get("error_code") or ""),
        )
    cost = None
    if body.get("price") not in (None, ""):
        try:
            cost = abs(Decimal(str(body["price"])))
        except InvalidOperation:
            cost = None
    return SendResult(
        provider_message_id=sid,
        status="delivered" if status in ("delivered", "opened") else "sent",
        status_code=status_code,
        cost=cost,
        cost_currency=(body.get("price_unit") or "").upper()[:3],
        raw=body,
    )
