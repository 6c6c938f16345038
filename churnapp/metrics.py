"""churnapp's Prometheus series: scoring work and webhook rejections (fed by config.metrics)."""

from prometheus_client import Counter, Histogram

SCORING_TASK_SECONDS = Histogram(
    "churn_scoring_run_seconds",
    "Wall time of one scoring task (a batch chunk, a real-time rescore, a retrain).",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
LEADS_SCORED = Counter("churn_leads_scored_total", "Leads whose churn risk was scored.", ["task"])
RISK_TIER_CHANGES = Counter(
    "churn_risk_tier_changes_total", "Leads whose risk tier changed, by new tier.", ["tier"]
)
WEBHOOK_REJECTIONS = Counter(
    "churn_webhook_rejections_total",
    "Inbound webhooks answered with an error, by endpoint and error code.",
    ["source", "reason"],
)
