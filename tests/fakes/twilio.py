"""A fake Twilio Messages API, and helpers to sign callbacks the way Twilio does."""

from __future__ import annotations

import base64
import re
import secrets
from email.utils import format_datetime

import requests
from django.utils import timezone
from twilio.request_validator import RequestValidator

from tests.fakes.http import Answer, FakeServer, Recorded

_SEND = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_FETCH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json$")


class TwilioFake(FakeServer):
    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "twilio-test-token",
        *,
        accounts: dict[str, str] | None = None,
    ) -> None:
        """One account, or several (`accounts`: SID -> auth token) as many tenants'
        Twilio accounts behind one API."""
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.accounts = {account_sid: auth_token, **(accounts or {})}
        self._expected = {
            sid: "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()
            for sid, token in self.accounts.items()
        }
        self.messages: dict[str, dict] = {}
        self.opted_out: set[str] = set()

    def validate(self, request: Recorded) -> Answer | None:
        match = _SEND.match(request.path) or _FETCH.match(request.path)
        expected = self._expected.get(match.group(1)) if match else None
        if expected is None or request.headers.get("authorization") != expected:
            if not any(request.headers.get("authorization") == e for e in self._expected.values()):
                return Answer(401, body={"code": 20003, "message": "Authenticate", "status": 401})
            return Answer(404, body={"code": 20404, "message": "not found", "status": 404})
        if request.method == "POST":
            if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
                return Answer(
                    400,
                    body={"code": 20001, "message": "form-encoded body required", "status": 400},
                )
            form = request.form()
            if not form.get("To"):
                return Answer(
                    400,
                    body={
                        "code": 21604,
                        "message": "A 'To' phone number is required.",
                        "status": 400,
                    },
                )
            if not (form.get("From") or form.get("MessagingServiceSid")):
                return Answer(
                    400,
                    body={
                        "code": 21603,
                        "message": "A 'From' phone number is required.",
                        "status": 400,
                    },
                )
            if not form.get("Body"):
                return Answer(
                    400, body={"code": 21602, "message": "Message body is required.", "status": 400}
                )
            if form["To"] in self.opted_out:
                return Answer(
                    400,
                    body={
                        "code": 21610,
                        "message": "Attempt to send to unsubscribed recipient",
                        "status": 400,
                    },
                )
        return None

    def default(self, request: Recorded) -> Answer:
        if request.method == "POST":
            form = request.form()
            sid = "SM" + secrets.token_hex(16)
            item = {
                "sid": sid,
                "account_sid": _SEND.match(request.path).group(1),
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued",
                "price": None,
                "price_unit": "USD",
                "error_code": None,
                "date_created": format_datetime(timezone.now()),
                "status_callback": form.get("StatusCallback"),
            }
            self.messages[sid] = item
            return Answer(201, body=item)
        if match := _FETCH.match(request.path):
            item = self.messages.get(match.group(2))
            return (
                Answer(200, body=item) if item else Answer(404, body={"code": 20404, "status": 404})
            )
        to = (request.query.get("To") or [None])[0]
        items = [m for m in self.messages.values() if to in (None, m["to"])]
        return Answer(200, body={"messages": list(reversed(items)), "next_page_uri": None})

    def set_status(self, sid: str, status: str, price: str | None = None) -> None:
        self.messages[sid]["status"] = status
        if price is not None:
            self.messages[sid]["price"] = price

    def signed_post(
        self, url: str, params: dict, *, auth_token: str | None = None
    ) -> requests.Response:
        """POST a callback the way Twilio does, signed with the auth token."""
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(url, params)
        return requests.post(
            url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
        )


def twilio_signature(*, auth_token: str, url: str, params: dict) -> str:
    return RequestValidator(auth_token).compute_signature(url, params)
