"""activities_ingest: all or nothing, once per source event id, clocks and signal."""

import datetime as dt

import pytest
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.factories import LeadFactory
from churnapp.models import LeadActivity, LeadStatus
from churnapp.services.activities import ActivityInput, activities_ingest
from churnapp.signals import activity_ingested


@pytest.fixture
def received():
    calls = []

    def receiver(**kwargs):
        calls.append(kwargs)

    activity_ingested.connect(receiver, weak=False)
    yield calls
    activity_ingested.disconnect(receiver)


def _item(lead, n, kind="sms_inbound", hours_ago=1):
    return ActivityInput(
        lead_external_id=lead.external_id,
        kind=kind,
        occurred_at=timezone.now() - dt.timedelta(hours=hours_ago),
        source_event_id=f"e-{n}",
    )


def test_same_batch_twice_is_stored_once(tenant, received):
    # given
    lead = LeadFactory(tenant=tenant)
    batch = [_item(lead, 1), _item(lead, 2, "email_open", 2), _item(lead, 1)]
    # when
    first = activities_ingest(tenant=tenant, items=batch)
    second = activities_ingest(tenant=tenant, items=batch)
    # then
    assert first.statuses == ["created", "created", "duplicate"]
    assert second.statuses == ["duplicate"] * 3
    assert LeadActivity.objects.filter(lead=lead).count() == 2
    assert len(received) == 1
    assert received[0]["inbound_lead_ids"] == [lead.id]
    lead.refresh_from_db()
    assert lead.last_inbound_at == batch[0].occurred_at


def test_one_bad_item_stores_nothing(tenant, received):
    lead = LeadFactory(tenant=tenant)
    batch = [
        _item(lead, 1),
        ActivityInput("nobody", "sms_inbound", timezone.now(), "e-2"),
        ActivityInput(lead.external_id, "teleport", timezone.now(), "e-3"),
    ]
    with pytest.raises(ApplicationError) as err:
        activities_ingest(tenant=tenant, items=batch)
    assert set(err.value.details["items"]) == {"1", "2"}
    assert LeadActivity.objects.count() == 0
    assert received == []


def test_leads_of_another_tenant_are_unknown(tenant, other_tenant):
    foreign = LeadFactory(tenant=other_tenant)
    with pytest.raises(ApplicationError):
        activities_ingest(tenant=tenant, items=[_item(foreign, 1)])


def test_opportunity_won_converts_the_lead(tenant):
    lead = LeadFactory(tenant=tenant)
    activities_ingest(tenant=tenant, items=[_item(lead, 1, "opportunity_won")])
    lead.refresh_from_db()
    assert lead.status == LeadStatus.CONVERTED
    assert lead.last_inbound_at is None
