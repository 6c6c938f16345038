"""Structured logs: ids from a per-task/per-request context, personal data redacted, JSON out."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid

# The ids a log line may carry. Never names, addresses, phone numbers or message text.
CONTEXT_KEYS = (
    "request_id",
    "task_id",
    "task",
    "tenant_id",
    "lead_id",
    "intervention_id",
    "escalation_id",
    "message_id",
    "chunk_id",
    "webhook_event_id",
)
_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("churn_log", default=None)


def log_context_start(**ids) -> contextvars.Token:
    """Open a fresh context (a task, a request); pass its token to log_context_end."""
    return _context.set({k: v for k, v in ids.items() if k in CONTEXT_KEYS and v is not None})


def log_context_end(token: contextvars.Token) -> None:
    _context.reset(token)


def log_context_update(**ids) -> None:
    """Add ids to the open context; outside a task or request this does nothing, so an
    id never leaks into unrelated lines of a long-lived thread."""
    current = _context.get()
    if current is None:
        return
    current.update({k: v for k, v in ids.items() if k in CONTEXT_KEYS and v is not None})


def log_context() -> dict:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copy the open context's ids onto each record (record.<key>), keeping explicit extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# E.164 (how leads' phones are stored) and the usual North American spellings.
PHONE = re.compile(r"(?<![\w+])\+\d[\d \-]{6,16}\d\b|(?<!\d)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)")
# Extras under these names are blanked whatever they hold (never a LogRecord attribute
# such as "name", the logger's name).
SENSITIVE_FIELDS = frozenset(
    {
        "body",
        "body_text",
        "body_html",
        "subject",
        "to",
        "to_address",
        "email",
        "phone",
        "address",
        "first_name",
        "last_name",
        "full_name",
        "text",
    }
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


class RedactFilter(logging.Filter):
    """Strip emails and phone numbers from the message (and exception text) of every
    record; blank extras whose names say they hold personal data or message bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call must still be logged, unformatted
            message = str(record.msg)
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for name in SENSITIVE_FIELDS & set(vars(record)):
            setattr(record, name, REDACTED)
        return True


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = (
                    value if isinstance(value, (int, float, bool, type(None))) else str(value)
                )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


class RequestLogContextMiddleware:
    """Each request logs under its own request id (X-Request-ID when the proxy sends one)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        request_id = (request.headers.get("X-Request-ID") or uuid.uuid4().hex)[:64]
        token = log_context_start(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            log_context_end(token)
        response["X-Request-ID"] = request_id
        return response
