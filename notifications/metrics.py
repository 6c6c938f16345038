"""notifications' Prometheus series: messages, attempts, latency, broadcast lag."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "churn_messages_total",
    "Message status transitions, by channel and the status entered.",
    ["channel", "status"],
)
MESSAGE_RETRIES = Counter(
    "churn_message_retries_total",
    "Sends that failed transiently and were queued for another attempt.",
    ["channel"],
)
MESSAGE_FALLBACKS = Counter(
    "churn_message_fallbacks_total",
    "Fallback messages created because the original could not be delivered.",
    ["channel"],
)
MESSAGE_SUPPRESSIONS = Counter(
    "churn_message_suppressions_total",
    "Messages not sent because the recipient is suppressed (opt-out, bounce).",
    ["channel"],
)
MESSAGES_DEAD = Counter(
    "churn_messages_dead_total",
    "Messages given up on after their last transient failure.",
    ["channel"],
)
SEND_ATTEMPTS = Counter(
    "churn_send_attempts_total",
    "Provider calls, by provider and outcome (sent, transient, permanent, unknown, ...).",
    ["provider", "outcome"],
)
SEND_LATENCY = Histogram(
    "churn_send_latency_seconds",
    "Duration of one provider call (DeliveryAttempt.latency_ms), by provider.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BROADCAST_LAG = Histogram(
    "churn_broadcast_lag_seconds",
    "From an event to its broadcast on the channel layer, by stream (agent_alert: message "
    "created -> pushed to the agent; dashboard: a lifecycle event committed -> published).",
    ["stream"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def broadcast_lag_observe(*, occurred_at: dt.datetime, stream: str = "dashboard") -> None:
    """Call right after a group_send of an event that happened at `occurred_at` (tracking's
    publisher calls this with the time the committed event was handed to it; agent alerts
    are observed by config.metrics)."""
    BROADCAST_LAG.labels(stream).observe(max(0.0, (timezone.now() - occurred_at).total_seconds()))
