"""Beat jobs of interventions: close response windows and watch escalation SLAs."""

from __future__ import annotations

from celery import shared_task

from interventions.services.escalations import escalations_check_sla
from interventions.services.orchestration import interventions_evaluate_due


@shared_task(name="interventions.evaluate_windows", queue="interventions")
def evaluate_windows() -> int:
    return interventions_evaluate_due()


@shared_task(name="interventions.escalation_sla_check", queue="interventions")
def escalation_sla_check() -> int:
    return escalations_check_sla()
