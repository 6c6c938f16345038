"""The real-time rescore hint through real processes: an inbound activity committed by
the API's ingest is relayed by a Celery worker process (its bootstep's LISTEN thread)
and rescored there, with no enqueue by the ingesting process."""

from __future__ import annotations

import pytest
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.hints import relay_holder_pid
from churnapp.models import Lead
from churnapp.services.activities import ActivityInput, activities_ingest
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_relays_the_hint_and_rescores_the_lead(tenant, worker_process):
    # given a worker on the flow queue, its relay listening
    lead = LeadFactory(tenant=tenant)
    assert lead.risk_scored_at is None
    worker = worker_process(name="relay@test", queues=["interventions"])
    wait_for(relay_holder_pid, timeout=60, describe=worker.output)
    # when the lead's reply is ingested (committed here; nothing is enqueued here)
    activities_ingest(
        tenant=tenant,
        items=[
            ActivityInput(
                lead_external_id=lead.external_id,
                kind="sms_inbound",
                occurred_at=timezone.now(),
                source_event_id="relay-1",
            )
        ],
    )
    # then the worker rescored it
    scored = wait_for(
        lambda: Lead.objects.filter(pk=lead.pk, risk_scored_at__isnull=False).first(),
        timeout=60,
        describe=worker.output,
    )
    assert scored.risk_tier != ""
