"""The one base class every provider backend follows, its results and its error tree."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, ClassVar

from django.conf import settings
from django.utils import timezone

from notifications.backends.transport import (
    AnswerTimeout,
    ConnectFailed,
    ConnectionLost,
    HttpResponse,
    InvalidUrl,
    http_request,
)

if TYPE_CHECKING:
    from churnapp.models import Tenant
    from notifications.models import Message


class BackendError(Exception):
    """A provider call that did not succeed. `status_code` is the HTTP answer, if any."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class TransientError(BackendError):
    """May succeed later: 5xx, 429, connection refused before the request went out."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class PermanentError(BackendError):
    """Will never succeed as asked: 4xx, a missing address. `suppress_reason` (a
    SuppressionReason value) when the address itself must be suppressed: the provider
    says the recipient opted out (Twilio 21610: provider_opt_out) or the mailbox was
    refused (bounce)."""

    def __init__(self, message: str, *, suppress_reason: str = "", **kwargs):
        super().__init__(message, **kwargs)
        self.suppress_reason = suppress_reason


class ConfigurationError(PermanentError):
    """The tenant's channel is not configured (no token, no from number, no URL)."""


class UnknownOutcomeError(BackendError):
    """The request went out but no answer came back: it may or may not have been sent."""


@dataclass
class SendResult:
    provider_message_id: str = ""
    status: str = "sent"  # "sent", or "delivered" when the provider confirms receipt
    status_code: int | None = None
    cost: Decimal | None = None
    cost_currency: str = ""
    raw: dict = field(default_factory=dict)


class BaseBackend:
    """build_payload -> post -> parse_response, like django-anymail's backends.

    A backend is made per send with the tenant and its merged channel options; it must
    not write to the database (the send service records what happened).
    """

    channel: ClassVar[str] = ""
    provider: ClassVar[str] = "local"

    def __init__(self, *, tenant: Tenant, options: dict | None = None):
        self.tenant = tenant
        self.options = options or {}

    @property
    def dotted_path(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def rate_limit_key(self, message: Message) -> str | None:
        """The shared rate-limit bucket this send counts against (None: unlimited)."""
        return None

    def send(self, message: Message) -> SendResult:
        payload = self.build_payload(message)
        response = self.post(message, payload)
        return self.parse_response(message, response)

    def build_payload(self, message: Message):
        raise NotImplementedError

    def post(self, message: Message, payload):
        raise NotImplementedError

    def parse_response(self, message: Message, response) -> SendResult:
        raise NotImplementedError

    def reconcile(self, message: Message) -> SendResult | None:
        """Ask the provider what became of a message whose outcome is unknown.

        None means the provider cannot be asked or does not know it; the caller then
        leaves the message `unknown` instead of sending it again."""
        return None

    def option(self, name: str, setting: str | None = None, default=None):
        if self.options.get(name) not in (None, ""):
            return self.options[name]
        if setting and getattr(settings, setting, None) not in (None, ""):
            return getattr(settings, setting)
        return default


def retry_after_seconds(response) -> float | None:
    """The wait a 429 or 5xx answer asks for (`response.headers`: case-insensitive)."""
    value = response.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
            except (TypeError, ValueError):
                return None
    interval = response.headers.get("X-RateLimit-Interval-Milliseconds")
    if interval and response.headers.get("X-RateLimit-Remaining") == "0":
        try:
            return float(interval) / 1000.0
        except ValueError:
            return None
    return None


class HttpBackend(BaseBackend):
    """Shared HTTP call and error classification for the REST providers."""

    def http(self, method: str, url: str, **kwargs) -> HttpResponse:
        """One call over this process's kept-alive pools (see backends.transport);
        keyword arguments as http_request's."""
        timeout = (
            settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT,
            settings.NOTIFICATIONS_HTTP_READ_TIMEOUT,
        )
        started = time.monotonic()
        try:
            response = http_request(method, url, timeout=timeout, **kwargs)
        except ConnectFailed as exc:
            what = "connect timeout" if exc.timed_out else "connection failed"
            raise TransientError(f"{what}: {exc}") from exc
        except AnswerTimeout as exc:
            # The request was written; the provider may have acted on it.
            raise UnknownOutcomeError(
                f"no answer within {timeout[1]}s after the request went out"
            ) from exc
        except ConnectionLost as exc:
            raise UnknownOutcomeError(f"connection lost after the request: {exc}") from exc
        except InvalidUrl as exc:
            raise ConfigurationError(str(exc)) from exc
        self.last_latency_ms = int((time.monotonic() - started) * 1000)
        return response

    def raise_for_status(self, response: HttpResponse) -> None:
        code = response.status_code
        if 200 <= code < 300:
            return
        text = response.text[:500]
        if code == 429:
            raise TransientError(
                f"rate limited (429): {text}",
                retry_after=retry_after_seconds(response),
                status_code=code,
            )
        if code >= 500 or code == 408:
            raise TransientError(
                f"provider error {code}: {text}",
                retry_after=retry_after_seconds(response),
                status_code=code,
            )
        if code in (401, 403):
            raise ConfigurationError(
                f"provider refused our credentials ({code}): {text}", status_code=code
            )
        raise PermanentError(f"provider rejected the request ({code}): {text}", status_code=code)
