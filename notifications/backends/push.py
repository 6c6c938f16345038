"""Web Push with VAPID (pywebpush) to every browser the recipient subscribed."""

from __future__ import annotations

import json

from django.conf import settings
from django.utils import timezone
from pywebpush import WebPushException, webpush

from notifications.backends.base import (
    BackendError,
    BaseBackend,
    ConfigurationError,
    PermanentError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
    retry_after_seconds,
)
from notifications.backends.transport import (
    AnswerTimeout,
    ConnectFailed,
    ConnectionLost,
    InvalidUrl,
    PooledSession,
)


class WebPushBackend(BaseBackend):
    channel = "push"
    provider = "webpush"

    def subscriptions(self, message):
        from notifications.models import PushSubscription

        owner = {"lead": message.lead} if message.lead_id else {"agent": message.agent}
        return list(
            PushSubscription.objects.filter(tenant=self.tenant, is_active=True, **owner).order_by(
                "pk"
            )
        )

    def build_payload(self, message) -> str:
        return json.dumps(
            {
                "title": message.subject or self.tenant.name,
                "body": message.body_text,
                "message_id": message.pk,
                "url": (message.links or [None])[0],
            }
        )

    def send(self, message) -> SendResult:
        private_key = self.option("vapid_private_key", "VAPID_PRIVATE_KEY")
        subject = self.option("vapid_claims_sub", "VAPID_CLAIMS_SUB")
        if not private_key or not subject:
            raise ConfigurationError("VAPID_PRIVATE_KEY and VAPID_CLAIMS_SUB are required for push")
        subscriptions = self.subscriptions(message)
        if not subscriptions:
            raise PermanentError("the recipient has no active push subscription")
        payload = self.build_payload(message)
        locations, errors = [], []
        for sub in subscriptions:
            try:
                response = webpush(
                    subscription_info={
                        "endpoint": sub.endpoint,
                        "keys": {"p256dh": sub.p256dh, "auth": sub.auth},
                    },
                    data=payload,
                    vapid_private_key=private_key,
                    vapid_claims={"sub": subject},
                    ttl=int(self.options.get("ttl", settings.NOTIFICATIONS_PUSH_TTL)),
                    timeout=(
                        settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT,
                        settings.NOTIFICATIONS_HTTP_READ_TIMEOUT,
                    ),
                    requests_session=PooledSession(),
                )
            except WebPushException as exc:
                errors.append(self._classify(sub, exc))
                continue
            except AnswerTimeout as exc:
                errors.append(UnknownOutcomeError(f"push service did not answer: {exc}"))
                continue
            except (ConnectFailed, ConnectionLost) as exc:
                errors.append(TransientError(f"push service unreachable: {exc}"))
                continue
            except InvalidUrl as exc:
                errors.append(PermanentError(f"push endpoint cannot be called: {exc}"))
                continue
            sub.last_success_at = timezone.now()
            sub.save(update_fields=["last_success_at"])
            locations.append(response.headers.get("Location") or sub.endpoint)
        if locations:
            return SendResult(
                provider_message_id=locations[0][:255], status="sent", raw={"sent": len(locations)}
            )
        for kind in (UnknownOutcomeError, TransientError):
            for err in errors:
                if isinstance(err, kind):
                    raise err
        raise errors[0]

    def _classify(self, sub, exc: WebPushException) -> BackendError:
        response = exc.response
        code = response.status_code if response is not None else None
        if code in (404, 410):
            # The browser unsubscribed: this endpoint will never work again.
            sub.is_active = False
            sub.save(update_fields=["is_active"])
            return PermanentError(f"push subscription gone ({code})", status_code=code)
        if code is not None and (code == 429 or code >= 500):
            return TransientError(
                f"push service error {code}",
                status_code=code,
                retry_after=retry_after_seconds(response),
            )
        return PermanentError(f"push service refused ({code}): {exc}", status_code=code)
