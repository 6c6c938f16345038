"""Email through a Django email backend: SMTP, or any django-anymail ESP."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from notifications.backends.base import (
    BaseBackend,
    ConfigurationError,
    PermanentError,
    SendResult,
    TransientError,
    UnknownOutcomeError,
)
from notifications.email_content import email_parts


class DjangoEmailBackend(BaseBackend):
    """HTML + text parts, List-Unsubscribe, and a Message-ID that carries our message id.

    `email_backend` (ChannelConfig option) picks the Django backend; the default is
    settings.NOTIFICATIONS_EMAIL_BACKEND (SMTP via the EMAIL_* settings)."""

    channel = "email"
    provider = "email"

    def build_payload(self, message) -> EmailMultiAlternatives:
        if not message.to_address:
            raise PermanentError("the recipient has no email address")
        parts = email_parts(message)
        domain = settings.NOTIFICATIONS_EMAIL_MESSAGE_ID_DOMAIN
        headers = {**parts.headers, "Message-ID": f"<notification-{message.pk}@{domain}>"}
        email = EmailMultiAlternatives(
            subject=parts.subject,
            body=parts.text,
            from_email=self.option("from_email", "DEFAULT_FROM_EMAIL"),
            to=[message.to_address],
            headers=headers,
        )
        email.attach_alternative(parts.html, "text/html")
        # Read by anymail ESP backends and echoed in their tracking webhooks.
        email.metadata = {"notification_message_id": str(message.pk)}
        email.tags = [message.template_key or message.channel]
        return email

    def post(self, message, payload: EmailMultiAlternatives):
        path = self.option("email_backend", "NOTIFICATIONS_EMAIL_BACKEND")
        try:
            connection = (
                get_connection(
                    path, fail_silently=False, timeout=settings.NOTIFICATIONS_HTTP_READ_TIMEOUT
                )
                if "smtp" in path
                else get_connection(path, fail_silently=False)
            )
        except ImportError as exc:
            raise ConfigurationError(f"email backend {path!r}: {exc}") from exc
        payload.connection = connection
        try:
            sent = payload.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(
                f"recipient refused: {exc.recipients}", suppress_reason="bounce"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientError(
                    f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", status_code=exc.smtp_code
                ) from exc
            raise PermanentError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", status_code=exc.smtp_code
            ) from exc
        except TimeoutError as exc:
            raise UnknownOutcomeError(f"SMTP timed out: {exc}") from exc
        except (
            smtplib.SMTPConnectError,
            ConnectionRefusedError,
            smtplib.SMTPServerDisconnected,
        ) as exc:
            raise TransientError(f"SMTP connection failed: {exc}") from exc
        except Exception as exc:
            _raise_anymail(exc)
            raise
        if not sent:
            raise PermanentError("the email backend sent nothing")
        return payload

    def parse_response(self, message, response: EmailMultiAlternatives) -> SendResult:
        status = getattr(response, "anymail_status", None)
        if status is not None and status.message_id:
            if status.status and status.status <= {"rejected", "invalid"}:
                raise PermanentError(f"the ESP rejected the message: {status.status}")
            return SendResult(
                provider_message_id=str(status.message_id), raw={"esp": str(status.status)}
            )
        return SendResult(provider_message_id=response.extra_headers["Message-ID"])


def _raise_anymail(exc: Exception) -> None:
    try:
        from anymail.exceptions import (
            AnymailError,
            AnymailRecipientsRefused,
            AnymailRequestsAPIError,
        )
    except ImportError:  # pragma: no cover - anymail is a requirement
        return
    if isinstance(exc, AnymailRecipientsRefused):
        raise PermanentError(f"the ESP refused the recipient: {exc}") from exc
    if isinstance(exc, AnymailRequestsAPIError):
        code = exc.status_code or 0
        if code == 429 or code >= 500:
            raise TransientError(f"ESP error {code}: {exc}", status_code=code) from exc
        raise PermanentError(f"ESP error {code}: {exc}", status_code=code) from exc
    if isinstance(exc, AnymailError):
        raise PermanentError(f"ESP error: {exc}") from exc
