"""Prometheus: signal receivers feeding the apps' series, scrape-time gauges, /metrics."""

from __future__ import annotations

import hmac
import inspect
import logging
import os
import time

from celery.signals import task_postrun, task_prerun, task_retry, worker_ready
from django.conf import settings
from django.db.models import Count, F, Min
from django.db.models.functions import Coalesce, Greatest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from churnapp import metrics as churn_metrics
from interventions import metrics as intervention_metrics
from notifications import metrics as notification_metrics

log = logging.getLogger(__name__)

CELERY_TASKS = Counter(
    "churn_celery_tasks_total", "Celery tasks finished, by task and state.", ["task", "state"]
)
CELERY_TASK_SECONDS = Histogram(
    "churn_celery_task_seconds",
    "Celery task run time, by task.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CELERY_TASK_RETRIES = Counter(
    "churn_celery_task_retries_total", "Celery task retries (self.retry / autoretry).", ["task"]
)

SENT_STATUSES = {"sent", "delivered", "opened", "clicked", "replied"}
NOT_YET_SENT = {"queued", "sending", "unknown", "dead"}
SCORING_TASKS = {
    "churnapp.rescore_chunk",
    "churnapp.rescore_leads",
    "churnapp.rescore_tenant",
    "churnapp.rescore_all_tenants",
    "churnapp.retrain_tenant",
}
# Tasks whose integer result is a number of leads scored.
LEADS_SCORED_TASKS = {"churnapp.rescore_chunk", "churnapp.rescore_leads"}


def _record(fn) -> None:
    """Record now, inside the sender's transaction. A rollback after the signal (rare:
    each signal is the last step of its write) leaves a count one high; deferring with
    on_commit instead would add a callback per transition to every transaction. A
    metric must never break the write it observes, so errors are only logged."""
    try:
        fn()
    except Exception:
        log.exception("recording a metric failed")


# --- app signals -> series ------------------------------------------------------------------
def on_message_status_changed(
    sender, *, tenant_id, message_id, lead_id, channel, previous_status, new_status, **kwargs
) -> None:
    from config.logging import log_context_update

    log_context_update(tenant_id=tenant_id, lead_id=lead_id, message_id=message_id)

    def record() -> None:
        notification_metrics.MESSAGES.labels(channel, new_status).inc()
        if new_status == "queued" and previous_status in ("sending", "unknown"):
            notification_metrics.MESSAGE_RETRIES.labels(channel).inc()
        elif new_status == "suppressed":
            notification_metrics.MESSAGE_SUPPRESSIONS.labels(channel).inc()
        elif new_status == "dead":
            notification_metrics.MESSAGES_DEAD.labels(channel).inc()
        if new_status in SENT_STATUSES and previous_status in NOT_YET_SENT:
            # Only an intervention's message has a detection to measure from.
            if (kwargs.get("metadata") or {}).get("intervention_id"):
                _detection_to_first_send(message_id)
            if channel == "agent_alert":
                _agent_alert_lag(message_id)

    _record(record)


def on_message_statuses_changed(sender, *, changes, **kwargs) -> None:
    for change in changes:
        on_message_status_changed(sender, **change)


def _detection_to_first_send(message_id: int) -> None:
    """Observe detected_at -> sent_at when this is the intervention's first message out."""
    from interventions.models import InterventionStep
    from notifications.models import Message

    step = (
        InterventionStep.objects.filter(message_id=message_id)
        .select_related("intervention")
        .first()
    )
    sent_at = Message.objects.filter(pk=message_id).values_list("sent_at", flat=True).first()
    if step is None or sent_at is None:
        return
    earlier = (
        InterventionStep.objects.filter(intervention_id=step.intervention_id)
        .exclude(message_id=message_id)
        .filter(message__sent_at__lte=sent_at)
        .exists()
    )
    if not earlier:
        seconds = max(0.0, (sent_at - step.intervention.detected_at).total_seconds())
        intervention_metrics.DETECTION_TO_FIRST_SEND.labels(str(step.intervention.stage)).observe(
            seconds
        )


def _agent_alert_lag(message_id: int) -> None:
    """An agent alert is sent by its group_send on the channel layer: created -> sent."""
    from notifications.models import Message

    row = Message.objects.filter(pk=message_id).values("created_at", "sent_at").first()
    if row and row["sent_at"]:
        lag = max(0.0, (row["sent_at"] - row["created_at"]).total_seconds())
        notification_metrics.BROADCAST_LAG.labels("agent_alert").observe(lag)


def on_message_saved(sender, instance, created, **kwargs) -> None:
    if created and instance.fallback_of_id:
        channel = instance.channel
        _record(lambda: notification_metrics.MESSAGE_FALLBACKS.labels(channel).inc())


def on_attempt_saved(sender, instance, created, **kwargs) -> None:
    if not created:
        return
    message = instance.message  # the send path passes the loaded row
    provider = message.provider or instance.backend.rsplit(".", 1)[-1]
    outcome, latency_ms = instance.outcome, instance.latency_ms

    def record() -> None:
        notification_metrics.SEND_ATTEMPTS.labels(provider, outcome).inc()
        if latency_ms is not None:
            notification_metrics.SEND_LATENCY.labels(provider).observe(latency_ms / 1000)

    _record(record)


def on_risk_assessed(sender, *, tenant_id, lead_id, new_tier, **kwargs) -> None:
    _record(lambda: churn_metrics.RISK_TIER_CHANGES.labels(new_tier).inc())


def on_risk_assessed_many(sender, *, tenant_id, changes, **kwargs) -> None:
    tiers = [change["new_tier"] for change in changes]

    def record() -> None:
        for tier in tiers:
            churn_metrics.RISK_TIER_CHANGES.labels(tier).inc()

    _record(record)


def on_intervention_changed(sender, *, tenant_id, intervention_id, lead_id, event, **kwargs):
    from config.logging import log_context_update

    log_context_update(tenant_id=tenant_id, lead_id=lead_id, intervention_id=intervention_id)
    _record(lambda: intervention_metrics.INTERVENTION_EVENTS.labels(event).inc())


def on_escalation_changed(sender, *, tenant_id, escalation_id, lead_id, event, **kwargs):
    from config.logging import log_context_update

    log_context_update(tenant_id=tenant_id, lead_id=lead_id, escalation_id=escalation_id)

    def record() -> None:
        intervention_metrics.ESCALATION_EVENTS.labels(event).inc()
        if event == "sla_breached":
            intervention_metrics.SLA_BREACHES.inc()

    _record(record)


def connect_receivers() -> None:
    """Called once from OpsConfig.ready(); dispatch_uid keeps a second call harmless."""
    from django.db.models.signals import post_save

    from churnapp.signals import risk_assessed, risk_assessed_many
    from interventions.signals import escalation_changed, intervention_changed
    from notifications.models import DeliveryAttempt, Message
    from notifications.signals import message_status_changed, message_statuses_changed

    message_status_changed.connect(on_message_status_changed, dispatch_uid="ops-metrics")
    message_statuses_changed.connect(on_message_statuses_changed, dispatch_uid="ops-metrics")
    risk_assessed.connect(on_risk_assessed, dispatch_uid="ops-metrics")
    risk_assessed_many.connect(on_risk_assessed_many, dispatch_uid="ops-metrics")
    intervention_changed.connect(on_intervention_changed, dispatch_uid="ops-metrics")
    escalation_changed.connect(on_escalation_changed, dispatch_uid="ops-metrics")
    post_save.connect(on_message_saved, sender=Message, dispatch_uid="ops-metrics-fallback")
    post_save.connect(on_attempt_saved, sender=DeliveryAttempt, dispatch_uid="ops-metrics")


# --- Celery signals: task time, retries, log context -------------------------------------
_started: dict[str, tuple[float, object]] = {}


def _task_ids(task, args, kwargs) -> dict:
    """The task's *_id arguments by name (tasks take ids only)."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in bound.arguments.items() if k.endswith("_id") and isinstance(v, int)}


@task_prerun.connect
def _task_started(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra) -> None:
    from config.logging import log_context_start

    token = log_context_start(task_id=task_id, task=task.name, **_task_ids(task, args, kwargs))
    _started[task_id] = (time.monotonic(), token)


@task_postrun.connect
def _task_finished(sender=None, task_id=None, task=None, retval=None, state=None, **extra) -> None:
    from config.logging import log_context_end

    started, token = _started.pop(task_id, (None, None))
    if token is not None:
        try:
            log_context_end(token)
        except ValueError:  # reset from another context (eager calls); nothing to undo
            pass
    name = task.name
    CELERY_TASKS.labels(name, state or "UNKNOWN").inc()
    if started is None:
        return
    elapsed = time.monotonic() - started
    CELERY_TASK_SECONDS.labels(name).observe(elapsed)
    if name in SCORING_TASKS and state == "SUCCESS":
        churn_metrics.SCORING_TASK_SECONDS.labels(name).observe(elapsed)
        if name in LEADS_SCORED_TASKS and isinstance(retval, int):
            churn_metrics.LEADS_SCORED.labels(name).inc(retval)


@task_retry.connect
def _task_retried(sender=None, request=None, **extra) -> None:
    CELERY_TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


# --- scrape-time gauges ---------------------------------------------------------------------
def queue_depths(
    *, broker_url: str | None = None, queues: list[str] | None = None
) -> dict[str, int]:
    """Messages waiting in each named queue, read from the broker now (Redis list
    lengths, or RabbitMQ's passive queue declare)."""
    from config.celery import app

    queues = list(queues or settings.CELERY_QUEUE_NAMES)
    broker = broker_url or app.conf.broker_url or ""
    if broker.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        from config.beat_lock import redis_client

        options = app.conf.broker_transport_options or {}
        # kombu's Redis transport keeps one list per queue and priority step.
        steps = options.get("priority_steps", [0, 3, 6, 9])
        sep = options.get("sep", "\x06\x16")
        client = redis_client(broker)
        try:
            with client.pipeline() as pipe:
                for queue in queues:
                    for step in steps:
                        pipe.llen(f"{queue}{sep}{step}" if step else queue)
                counts = pipe.execute()
        finally:
            client.close()
        return {
            queue: sum(counts[i * len(steps) : (i + 1) * len(steps)])
            for i, queue in enumerate(queues)
        }
    depths: dict[str, int] = {}
    with app.connection_for_read(url=broker) as conn:
        channel = conn.channel()
        try:
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except conn.channel_errors:
                    # Not declared yet (nobody published or consumed): the channel closed.
                    depths[queue] = 0
                    channel = conn.channel()
        finally:
            channel.close()
    return depths


def outbox_oldest_ages() -> dict[str, tuple[int, float]]:
    """Per channel: queued messages already due, and how long the oldest has waited since
    it became due (created, or its not_before / next attempt time when later)."""
    from notifications.models import Message

    now = timezone.now()
    due_since = Greatest(
        F("created_at"),
        Coalesce(F("not_before"), F("created_at")),
        Coalesce(F("next_attempt_at"), F("created_at")),
    )
    rows = (
        Message.objects.filter(status="queued")
        .annotate(due_since=due_since)
        .filter(due_since__lte=now)
        .values("channel")
        .annotate(oldest=Min("due_since"), waiting=Count("id"))
    )
    return {r["channel"]: (r["waiting"], (now - r["oldest"]).total_seconds()) for r in rows}


class OpsCollector:
    """Gauges read at scrape time from PostgreSQL, Redis and the broker (web process only).
    A part that cannot be read reports churn_ops_collector_up{part} 0 instead of failing."""

    def collect(self):
        up = GaugeMetricFamily(
            "churn_ops_collector_up",
            "1 when this part of the scrape could be read.",
            labels=["part"],
        )
        parts = (
            ("queues", self._queues),
            ("outbox", self._outbox),
            ("escalations", self._escalations),
            ("heartbeats", self._heartbeats),
        )
        for part, read in parts:
            try:
                families = list(read())
            except Exception as exc:
                log.warning("metrics: cannot read %s: %s", part, exc)
                up.add_metric([part], 0)
                continue
            up.add_metric([part], 1)
            yield from families
        yield up

    def _queues(self):
        depth = GaugeMetricFamily(
            "churn_queue_depth", "Tasks waiting in the broker, per queue.", labels=["queue"]
        )
        for queue, count in queue_depths().items():
            depth.add_metric([queue], count)
        yield depth

    def _outbox(self):
        age = GaugeMetricFamily(
            "churn_outbox_oldest_age_seconds",
            "How long the oldest due, queued message has waited, per channel.",
            labels=["channel"],
        )
        waiting = GaugeMetricFamily(
            "churn_outbox_due_messages",
            "Queued messages already due, per channel.",
            labels=["channel"],
        )
        from notifications.models import Channel

        ages = outbox_oldest_ages()
        for channel in Channel.values:
            count, seconds = ages.get(channel, (0, 0.0))
            age.add_metric([channel], seconds)
            waiting.add_metric([channel], count)
        yield age
        yield waiting

    def _escalations(self):
        from interventions.models import Escalation, EscalationStatus

        open_now = GaugeMetricFamily(
            "churn_escalations_open",
            "Escalations not resolved yet, by status.",
            labels=["status"],
        )
        counts = dict(
            Escalation.objects.exclude(status=EscalationStatus.RESOLVED)
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for status in (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED):
            open_now.add_metric([status], counts.get(status, 0))
        yield open_now
        breached = Escalation.objects.filter(
            status=EscalationStatus.OPEN, sla_due_at__lt=timezone.now()
        ).count()
        yield GaugeMetricFamily(
            "churn_escalations_overdue",
            "Open escalations past their SLA due time right now.",
            value=breached,
        )

    def _heartbeats(self):
        from config.heartbeat import beat_last_tick, live_workers

        tick = beat_last_tick()
        yield GaugeMetricFamily(
            "churn_beat_last_tick_timestamp_seconds",
            "Unix time of the last task the beat published (0: never).",
            value=tick or 0,
        )
        workers = live_workers()
        live = GaugeMetricFamily(
            "churn_workers_live",
            "Workers with a fresh heartbeat consuming each queue.",
            labels=["queue"],
        )
        for queue in settings.CELERY_QUEUE_NAMES:
            live.add_metric([queue], sum(queue in w.get("queues", []) for w in workers.values()))
        yield live


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def render_metrics() -> bytes:
    """This process's series (or every process's, in multiprocess mode) plus the gauges."""
    path = multiprocess_dir()
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    ops = CollectorRegistry(auto_describe=False)
    ops.register(OpsCollector())
    return generate_latest(registry) + generate_latest(ops)


@worker_ready.connect
def _serve_worker_metrics(sender=None, **kwargs) -> None:
    """With WORKER_METRICS_PORT set, this worker serves its own (and its pool children's)
    series: for workers on other machines or containers, which share no directory with
    the web. The scrape-time gauges stay on the web's /metrics only."""
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    path = multiprocess_dir()
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=registry)
    log.info("worker metrics on %s:%s/metrics", settings.WORKER_METRICS_ADDR, port)


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            body = {
                "error": {
                    "code": "not_authenticated",
                    "message": "Send Authorization: Bearer <METRICS_TOKEN>.",
                    "details": {},
                }
            }
            return JsonResponse(body, status=401)
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)


# --- webhook rejections ---------------------------------------------------------------------
# URL names of the endpoints that receive provider webhooks.
WEBHOOK_ROUTES = {"webhook-ghl", "twilio-status", "twilio-inbound", "in-app-callback"}


class WebhookRejectionMiddleware:
    """Count webhook requests answered 4xx/5xx, by endpoint and the error code returned."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400:
            return response
        match = getattr(request, "resolver_match", None)
        name = getattr(match, "url_name", None) or ""
        is_anymail = request.path.startswith("/anymail/")
        if name in WEBHOOK_ROUTES or is_anymail:
            reason = f"http_{response.status_code}"
            data = getattr(response, "data", None)
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                reason = str(data["error"].get("code") or reason)[:64]
            source = "anymail" if is_anymail else name
            churn_metrics.WEBHOOK_REJECTIONS.labels(source, reason).inc()
        return response
