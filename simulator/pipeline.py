"""The one place the simulator names the system's entry points: beat jobs, scoring, model metrics and impact."""

from __future__ import annotations

import datetime as dt
import importlib
import math
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from churnapp.models import Lead, LeadStatus, RiskTier, Tenant
from churnapp.signals import risk_assessed

# The beat schedule is settings.CELERY_BEAT_SCHEDULE, as beat reads it; the simulated
# clock ticks hourly, so a job of period P seconds runs every max(1, P/3600) ticks and a
# crontab job at the hours it matches (minutes are below the tick).
ALWAYS_EACH_TICK = ("churnapp.rescore_all_tenants",)
# Fan-out jobs that would touch every tenant; the simulation publishes the per-tenant
# task they fan out to, for its own tenant only.
PER_TENANT = {"churnapp.rescore_all_tenants", "churnapp.retrain_all_tenants"}


def tasks_load(app) -> None:
    """Register every app's tasks (Celery discovers them lazily)."""
    from django.apps import apps

    for config in apps.get_app_configs():
        try:
            importlib.import_module(f"{config.name}.tasks")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.tasks":
                raise


def _crontab_matches(schedule, when: dt.datetime) -> bool:
    return (
        when.hour in schedule.hour
        and (when.isoweekday() % 7) in schedule.day_of_week
        and when.day in schedule.day_of_month
        and when.month in schedule.month_of_year
    )


def beat_due(app, hour: int, when: dt.datetime) -> list[str]:
    """The tasks beat would have started in the simulated hour ending at `when`."""
    from django.conf import settings

    due = []
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        name, schedule = entry["task"], entry["schedule"]
        if name not in app.tasks:
            continue
        if isinstance(schedule, int | float | dt.timedelta):
            seconds = schedule.total_seconds() if isinstance(schedule, dt.timedelta) else schedule
            every = max(1, round(seconds / 3600))
            ok = hour % every == 0
        elif hasattr(schedule, "hour") and hasattr(schedule, "day_of_week"):
            ok = _crontab_matches(schedule, when)
        else:
            ok = True
        if ok or name in ALWAYS_EACH_TICK:
            due.append(name)
    return sorted(set(due))


# Stand-in tiers by days of silence, used only while churnapp's scorer is not installed
# (branch `scoring`); they follow the rules scorer's main factor (days since inbound).
SILENCE_TIERS: tuple[tuple[float, str], ...] = (
    (12.0, RiskTier.CRITICAL),
    (8.0, RiskTier.ACTIVE_RISK),
    (4.0, RiskTier.EARLY_WARNING),
    (0.0, RiskTier.LOW),
)


def scoring_installed() -> bool:
    try:
        importlib.import_module("churnapp.services.scoring")
    except ImportError:
        return False
    return True


def beat_publish(app, name: str, *, tenant: Tenant) -> None:
    """Publish one beat job as beat does; fan-out jobs as their per-tenant task."""
    if name == "churnapp.rescore_all_tenants":
        from churnapp.services.scoring import slot_for

        app.tasks["churnapp.rescore_tenant"].delay(tenant.id, slot_for(timezone.now()).isoformat())
    elif name == "churnapp.retrain_all_tenants":
        app.tasks["churnapp.retrain_tenant"].delay(tenant.id)
    else:
        app.tasks[name].apply_async()


def other_live_tenants(*, tenant_slug: str) -> list[str]:
    """Active tenants besides the simulated one that hold open work the global beat jobs
    (window evaluation, sweeps, SLA checks) would move along with the simulated clock."""
    from interventions.models import OPEN_STATUSES, Intervention

    return sorted(
        Tenant.objects.filter(is_active=True)
        .exclude(slug=tenant_slug)
        .filter(id__in=Intervention.objects.filter(status__in=OPEN_STATUSES).values("tenant_id"))
        .values_list("slug", flat=True)
    )


def silence_tiers_apply(*, tenant: Tenant) -> int:
    """Stand-in scorer (only without churnapp.services.scoring): tier by days since the
    lead's last inbound activity, sending `risk_assessed` on every tier change as the
    scorer does. Returns the number of tier changes."""
    now = timezone.now()
    changes = 0
    with transaction.atomic():
        leads = list(
            Lead.objects.select_for_update()
            .filter(tenant=tenant, status=LeadStatus.ACTIVE, deleted_at__isnull=True)
            .order_by("id")
            .only("id", "risk_tier", "last_inbound_at", "crm_created_at", "created_at")
        )
        for lead in leads:
            last = lead.last_inbound_at or lead.crm_created_at or lead.created_at
            days = (now - last).total_seconds() / 86400
            tier = next(t for threshold, t in SILENCE_TIERS if days >= threshold)
            score = 1 - math.exp(-days / 10)
            previous = lead.risk_tier
            if tier == previous:
                continue
            lead.risk_score, lead.risk_scored_at, lead.risk_tier = score, now, tier
            lead.save(update_fields=["risk_score", "risk_scored_at", "risk_tier"])
            changes += 1
            risk_assessed.send(
                sender=Lead,
                tenant_id=tenant.id,
                lead_id=lead.id,
                assessment_id=None,
                previous_tier=previous,
                new_tier=tier,
                score=score,
                model_version="sim-silence-stand-in",
                reasons=[
                    {
                        "factor": "days_since_inbound",
                        "text": f"{days:.0f} days without a reply",
                        "impact": score,
                    }
                ],
                assessed_at=now,
            )
    return changes


@dataclass(frozen=True)
class ModelInfo:
    version: str
    algorithm: str
    metrics: dict


def model_info(*, tenant: Tenant) -> ModelInfo:
    """The scorer in use for the tenant and its recorded validation metrics."""
    if not scoring_installed():
        return ModelInfo("sim-silence-stand-in", "days since inbound", {})
    from churnapp.models import ChurnModel

    model = (
        ChurnModel.objects.filter(tenant=tenant, status="active").order_by("-created_at").first()
    )
    if model is None:
        return ModelInfo("rules-v1", "rules (no trained model yet)", {})
    return ModelInfo(model.version, model.algorithm, dict(model.metrics or {}))


def model_train(*, tenant: Tenant) -> str:
    """Train the tenant's model on what the system has seen so far (if scoring exists)."""
    if not scoring_installed():
        return "scoring not installed: stand-in scorer in use"
    from churnapp.services.training import churn_model_train

    return churn_model_train(tenant=tenant).message


def tracking_impact(*, tenant: Tenant, since: dt.datetime, until: dt.datetime) -> dict:
    """tracking's business-impact answer for the simulated days: the definitions the
    API serves, reported beside the simulator's own measurement of the same runs."""
    from tracking.selectors import Period, analytics_impact

    period = Period(first_day=since.date(), last_day=until.date())
    return analytics_impact(tenant=tenant, period=period, now=until)
