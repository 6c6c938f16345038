"""interventions' Prometheus series: reaction time and escalations (fed by config.metrics)."""

from prometheus_client import Counter, Histogram

DETECTION_TO_FIRST_SEND = Histogram(
    "churn_detection_to_first_send_seconds",
    "From the risk assessment that started an intervention to its first message sent.",
    ["stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400),
)
INTERVENTION_EVENTS = Counter(
    "churn_intervention_events_total", "Intervention lifecycle events.", ["event"]
)
ESCALATION_EVENTS = Counter(
    "churn_escalation_events_total",
    "Escalation lifecycle events (opened, acknowledged, resolved, sla_breached).",
    ["event"],
)
SLA_BREACHES = Counter(
    "churn_escalation_sla_breaches_total", "Escalations that passed their SLA unacknowledged."
)
