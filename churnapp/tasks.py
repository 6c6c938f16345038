"""churnapp's Celery tasks: thin, ids only, one service call each."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError, transaction
from django.utils import timezone

from churnapp.services.webhooks import webhook_event_process, webhook_events_sweep


@shared_task(
    name="churnapp.webhook_process",
    queue="webhooks",
    autoretry_for=(OperationalError,),  # the database blinked; the event is still stored
    retry_backoff=5,
    retry_jitter=True,
    max_retries=5,
)
def webhook_process(webhook_event_id: int) -> str | None:
    event = webhook_event_process(webhook_event_id=webhook_event_id)
    return event.status if event is not None else None


@shared_task(name="churnapp.webhook_sweep", queue="default")
def webhook_sweep() -> int:
    """Re-enqueue stored webhook events whose enqueue was lost."""
    return webhook_events_sweep()


# --- Risk scoring (issue #3) --------------------------------------------------------------
# Beat starts `rescore_all_tenants` hourly and `retrain_all_tenants` weekly; the batch
# and training tasks run on the "scoring" queue, the real-time `rescore_leads` on
# "interventions".


@shared_task(name="churnapp.rescore_all_tenants", queue="scoring", ignore_result=True)
def rescore_all_tenants() -> int:
    from churnapp.services.scoring import slot_for, tenants_to_score

    slot = slot_for(timezone.now()).isoformat()
    tenant_ids = tenants_to_score()
    for tenant_id in tenant_ids:
        rescore_tenant.delay(tenant_id, slot)
    return len(tenant_ids)


@shared_task(name="churnapp.rescore_tenant", queue="scoring", ignore_result=True)
def rescore_tenant(tenant_id: int, slot: str) -> int:
    """Start the tenant's run for the slot once and fan its chunks out. A repeated call
    re-enqueues only chunks not done; chunk claims keep the work single."""
    import datetime as dt

    from churnapp.models import ScoringChunk, ScoringChunkStatus
    from churnapp.services.scoring import scoring_run_start

    run, _created = scoring_run_start(tenant_id=tenant_id, slot=dt.datetime.fromisoformat(slot))
    chunk_ids = list(
        ScoringChunk.objects.filter(run=run)
        .exclude(status=ScoringChunkStatus.DONE)
        .order_by("index")
        .values_list("id", flat=True)
    )
    transaction.on_commit(lambda: [rescore_chunk.delay(chunk_id) for chunk_id in chunk_ids])
    return len(chunk_ids)


@shared_task(name="churnapp.rescore_chunk", queue="scoring", ignore_result=True)
def rescore_chunk(chunk_id: int) -> int:
    from churnapp.services.scoring import scoring_chunk_process

    applied = scoring_chunk_process(chunk_id=chunk_id)
    return applied.scored if applied else 0


# Not on "scoring": the hourly batch fills that queue with chunks of seconds each, and a
# lead that just came back would wait behind all of them. The real-time rescore is a
# short transaction that leads straight into orchestration, so it runs with the flow
# work (settings CELERY_TASK_ROUTES routes it by name too).
@shared_task(name="churnapp.rescore_leads", queue="interventions", ignore_result=True)
def rescore_leads(tenant_id: int, lead_ids: list[int]) -> int:
    from churnapp.services.scoring import leads_rescore

    return leads_rescore(tenant_id=tenant_id, lead_ids=lead_ids).scored


@shared_task(name="churnapp.retrain_all_tenants", queue="scoring", ignore_result=True)
def retrain_all_tenants() -> int:
    from churnapp.services.scoring import tenants_to_score

    tenant_ids = tenants_to_score()
    for tenant_id in tenant_ids:
        retrain_tenant.delay(tenant_id)
    return len(tenant_ids)


@shared_task(name="churnapp.retrain_tenant", queue="scoring", ignore_result=True)
def retrain_tenant(tenant_id: int) -> str:
    from churnapp.models import Tenant
    from churnapp.services.training import churn_model_train

    return churn_model_train(tenant=Tenant.objects.get(pk=tenant_id)).message


# --- end of risk scoring ------------------------------------------------------------------
