"""Email through a Django email backend: SMTP, or any django-anymail ESP."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpEmailBackend

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
        stage = _SmtpStage()
        try:
            stage.open(connection)
            sent = payload.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(400 <= code < 500 for code in codes):
                # Greylisting, a full mailbox, a busy server: "try again later".
                raise TransientError(
                    f"recipient deferred: {exc.recipients}", status_code=max(codes)
                ) from exc
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
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if stage.data_sent:
                # The message went over the wire; the server's reply never came. It may
                # be delivered: never send it again blindly.
                raise UnknownOutcomeError(f"SMTP gave no answer to the message: {exc}") from exc
            raise TransientError(f"SMTP connection failed before the message: {exc}") from exc
        except Exception as exc:
            _raise_anymail(exc)
            raise
        finally:
            stage.close(connection)
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


class _SmtpStage:
    """Opens Django's SMTP connection itself so it can tell a failure before the message
    was transmitted (safe to retry) from one after (the outcome is unknown): smtplib
    reports a reply that timed out as a disconnection, like a refused greeting."""

    def __init__(self) -> None:
        self.data_sent = False
        self._opened = False

    def open(self, connection) -> None:
        if not isinstance(connection, SmtpEmailBackend):
            return  # an ESP's API, locmem: no SMTP conversation to follow
        self._opened = bool(connection.open())
        smtp = connection.connection
        if smtp is None:
            return
        transmit = smtp.data

        def data(msg):
            self.data_sent = True
            return transmit(msg)

        smtp.data = data

    def close(self, connection) -> None:
        if self._opened:
            connection.close()


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
