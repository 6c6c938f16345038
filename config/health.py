"""/healthz (the process answers), /readyz (its dependencies answer) and the admin health page."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from kombu import Connection

CHECK_TIMEOUT_SECONDS = 3

_migrations_applied = False


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def check_redis() -> str:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_broker() -> str:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    return "ok"


def check_migrations() -> str:
    """Unapplied migrations mean this code runs against an older schema."""
    global _migrations_applied
    if _migrations_applied:  # a deploy that adds migrations restarts the process
        return "ok"
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        raise RuntimeError(f"{len(plan)} unapplied: {names}")
    _migrations_applied = True
    return "ok"


# Readiness fails when one of these fails: the web cannot serve without them.
REQUIRED_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
    "migrations": check_migrations,
}


def heartbeats() -> dict:
    """Beat and workers as seen through their Redis heartbeats."""
    from config.beat_lock import beat_lock_holder, lock_redis_url
    from config.heartbeat import beat_last_tick, live_workers

    now = time.time()
    stale = settings.OPS_HEARTBEAT_STALE_SECONDS
    tick = beat_last_tick()
    workers = live_workers()
    return {
        "beat": {
            "status": "ok" if tick and now - tick <= stale else ("stale" if tick else "missing"),
            "last_tick": tick,
            "age_seconds": round(now - tick, 1) if tick else None,
            "lock_holder": beat_lock_holder(lock_redis_url(settings.CELERY_BROKER_URL)),
        },
        "workers": {
            "status": "ok" if workers else "missing",
            "live": {
                name: {"queues": info.get("queues", []), "age_seconds": round(now - info["at"], 1)}
                for name, info in workers.items()
            },
        },
    }


def readiness() -> tuple[bool, dict]:
    checks: dict[str, dict] = {}
    for name, check in REQUIRED_CHECKS.items():
        try:
            checks[name] = {"status": check()}
        except Exception as exc:  # whatever the failure, the answer is "not ready: why"
            checks[name] = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:300]}
    ready = all(c["status"] == "ok" for c in checks.values())
    # Heartbeats are reported, not required: a stopped beat must not take the web out
    # of the load balancer. The BeatSilent / NoWorkers alerts page for them instead.
    if checks["redis"]["status"] == "ok":
        try:
            checks.update(heartbeats())
        except redis.RedisError as exc:
            checks["heartbeats"] = {"status": "fail", "error": str(exc)[:300]}
    return ready, checks


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process serves requests. Touches no dependency on purpose."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    ready, checks = readiness()
    if ready:
        return JsonResponse({"status": "ready", "checks": checks})
    failing = [name for name in REQUIRED_CHECKS if checks[name]["status"] != "ok"]
    body = {
        "error": {
            "code": "not_ready",
            "message": f"Not ready: {', '.join(failing)} failing.",
            "details": {"failing": failing, "checks": checks},
        }
    }
    return JsonResponse(body, status=503)


@staff_member_required
def admin_health(request: HttpRequest):
    """System-wide state (not tenant data), so superusers only."""
    if not request.user.is_superuser:
        raise PermissionDenied
    from django.contrib import admin

    from config.metrics import outbox_oldest_ages, queue_depths

    ready, checks = readiness()
    try:
        depths = queue_depths()
    except Exception as exc:
        depths = {"error": str(exc)}
    try:
        outbox = outbox_oldest_ages()
    except DatabaseError as exc:
        outbox = {"error": str(exc)}
    context = {
        **admin.site.each_context(request),
        "title": "System health",
        "ready": ready,
        "checks": {k: v for k, v in checks.items() if k in REQUIRED_CHECKS},
        "beat": checks.get("beat"),
        "workers": checks.get("workers"),
        "queue_depths": depths,
        "outbox": outbox,
    }
    return render(request, "ops/health.html", context)
