"""Concurrent ingest batches that share leads: no deadlock, every activity stored."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.models import LeadActivity
from churnapp.services.activities import ActivityInput, activities_ingest

pytestmark = pytest.mark.django_db(transaction=True)

LEADS = 300
ROUNDS = 4


def _batch(leads, tag: str, at: dt.datetime) -> list[ActivityInput]:
    return [
        ActivityInput(
            lead_external_id=lead.external_id,
            kind="website_visit",
            occurred_at=at,
            source_event_id=f"{tag}-{lead.pk}",
        )
        for lead in leads
    ]


def test_batches_sharing_leads_in_opposite_orders_do_not_deadlock(tenant):
    # given leads, and two CRM clients that post the same leads in opposite orders
    leads = LeadFactory.create_batch(LEADS, tenant=tenant)
    errors: list[BaseException] = []

    def post(batch: list[ActivityInput], start: threading.Barrier) -> None:
        try:
            start.wait(timeout=30)
            activities_ingest(tenant=tenant, items=batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    # when they post at the same moment, round after round
    for n in range(ROUNDS):
        at = timezone.now() - dt.timedelta(minutes=ROUNDS - n)
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=post, args=(_batch(leads, f"a{n}", at), start)),
            threading.Thread(target=post, args=(_batch(leads[::-1], f"b{n}", at), start)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    # then neither was refused (a deadlock is an OperationalError) and all rows are there
    assert errors == []
    assert LeadActivity.objects.filter(tenant=tenant).count() == 2 * ROUNDS * LEADS
