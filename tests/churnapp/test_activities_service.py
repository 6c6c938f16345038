"""activities_ingest: all or nothing, once per source event id, clocks and signal."""

import datetime as dt
import math

import pytest
from django.utils import timezone

from churnapp.exceptions import ApplicationError
from churnapp.factories import LeadFactory
from churnapp.models import LeadActivity, LeadStatus
from churnapp.services.activities import PREPARED_BATCH_MAX, ActivityInput, activities_ingest
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


def test_clocks_take_each_leads_latest_activity_and_won_beats_lost(tenant):
    # given: leads with clocks already set, one of them ahead of the batch
    now = timezone.now().replace(microsecond=123456)
    old = now - dt.timedelta(days=30)
    ahead = now - dt.timedelta(minutes=1)
    a, b, c = (LeadFactory(tenant=tenant, last_activity_at=old) for _ in range(3))
    type(c).objects.filter(pk=c.pk).update(last_activity_at=ahead, last_inbound_at=ahead)

    def item(lead, n, kind, hours_ago):
        return ActivityInput(
            lead_external_id=lead.external_id,
            kind=kind,
            occurred_at=now - dt.timedelta(hours=hours_ago),
            source_event_id=f"c-{n}",
        )

    # when: one batch, items out of time order
    activities_ingest(
        tenant=tenant,
        items=[
            item(a, 1, "opportunity_lost", 5),
            item(a, 2, "sms_inbound", 3),
            item(a, 3, "email_outbound", 1),
            item(a, 4, "opportunity_won", 6),
            item(b, 5, "opportunity_lost", 2),
            item(b, 6, "email_outbound", 4),
            item(c, 7, "sms_inbound", 2),
        ],
    )

    # then: latest of any kind, latest inbound, won over lost; never moved back
    a.refresh_from_db(), b.refresh_from_db(), c.refresh_from_db()
    assert a.last_activity_at == now - dt.timedelta(hours=1)
    assert a.last_inbound_at == now - dt.timedelta(hours=3)
    assert a.status == LeadStatus.CONVERTED
    assert b.last_activity_at == now - dt.timedelta(hours=2)
    assert b.last_inbound_at is None
    assert b.status == LeadStatus.LOST
    assert (c.last_activity_at, c.last_inbound_at) == (ahead, ahead)
    assert c.status == LeadStatus.ACTIVE


def test_fields_are_stored_as_given(tenant):
    # given: values that a text round trip could bend
    lead = LeadFactory(tenant=tenant)
    at = dt.datetime(2026, 3, 1, 12, 30, 15, 654321, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    payload = {"text": 'Ça va? 🏠 \\ " \t', "n": [1, 2.5, None, True], "deep": {"k": {}}}
    items = [
        ActivityInput(lead.external_id, "sms_inbound", at, "f-1", value=0.1 + 0.2, payload=payload),
        ActivityInput(lead.external_id, "email_open", at, "f-2", value=1e300, channel="email"),
        ActivityInput(lead.external_id, "email_open", at, "f-3", value=None),
    ]

    # when
    activities_ingest(tenant=tenant, items=items)

    # then
    stored = {a.source_event_id: a for a in LeadActivity.objects.filter(lead=lead)}
    assert stored["f-1"].occurred_at == at
    assert stored["f-1"].value == 0.1 + 0.2
    assert stored["f-1"].payload == payload
    assert (stored["f-1"].direction, stored["f-1"].channel) == ("inbound", "sms")
    assert stored["f-2"].value == 1e300
    assert stored["f-2"].payload == {}
    assert stored["f-3"].value is None


def test_values_json_cannot_carry_are_stored_too(tenant):
    # given: values a webhook's float() can produce
    lead = LeadFactory(tenant=tenant)
    at = timezone.now()
    values = {"n-1": float("nan"), "n-2": float("inf"), "n-3": float("-inf")}

    # when
    activities_ingest(
        tenant=tenant,
        items=[
            ActivityInput(lead.external_id, "email_open", at, e, value=v) for e, v in values.items()
        ],
    )

    # then
    stored = dict(LeadActivity.objects.filter(lead=lead).values_list("source_event_id", "value"))
    assert math.isnan(stored["n-1"])
    assert (stored["n-2"], stored["n-3"]) == (float("inf"), float("-inf"))


def test_small_batches_run_prepared_and_large_ones_as_planned_sql(
    tenant, settings, django_assert_max_num_queries
):
    # the prepared statements give the same result as the plain SQL (the tests above
    # run both ways too: the first batch of a connection prepares)
    settings.DATABASE_SERVER_PREPARE = True
    lead = LeadFactory(tenant=tenant)
    small = [_item(lead, n) for n in range(PREPARED_BATCH_MAX)]
    large = [_item(lead, n) for n in range(PREPARED_BATCH_MAX, 2 * PREPARED_BATCH_MAX + 1)]
    with django_assert_max_num_queries(10) as captured:
        activities_ingest(tenant=tenant, items=small)
    assert any(q["sql"].startswith("EXECUTE churn_activities_lock(") for q in captured)
    with django_assert_max_num_queries(10) as captured:
        activities_ingest(tenant=tenant, items=large)
    assert not any("churn_activities" in q["sql"] for q in captured)
    assert LeadActivity.objects.filter(lead=lead).count() == 2 * PREPARED_BATCH_MAX + 1
    lead.refresh_from_db()
    assert lead.last_inbound_at == max(i.occurred_at for i in small + large)
