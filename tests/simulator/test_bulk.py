"""The bulk generator writes exactly what it is asked for, in churnapp's vocabulary."""

from __future__ import annotations

import datetime as dt

import psycopg2
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max
from django.test.utils import CaptureQueriesContext

from churnapp.models import KIND_CHANNEL, KIND_DIRECTION, Lead, LeadActivity, Tenant
from simulator import bulk
from simulator.bulk import bulk_generate

pytestmark = pytest.mark.django_db

END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_writes_the_requested_counts(tenant):
    result = bulk_generate(tenant=tenant, leads=300, activities=4500, seed=3, days=30, end=END)
    assert (result.leads, result.activities) == (300, 4500)
    assert Lead.objects.filter(tenant=tenant).count() == 300
    assert LeadActivity.objects.filter(tenant_id=tenant.id).count() == 4500
    rows = LeadActivity.objects.filter(tenant_id=tenant.id)
    for kind, direction, channel in rows.values_list("kind", "direction", "channel").distinct():
        assert KIND_DIRECTION[kind] == direction and KIND_CHANNEL[kind] == channel
    span = rows.aggregate(latest=Max("occurred_at"))["latest"]
    assert span < END
    assert rows.filter(occurred_at__lt=END - dt.timedelta(days=31)).count() == 0
    # Heavy-tailed per-lead volume, and the lead clocks follow the activity.
    per_lead = sorted(rows.values("lead").annotate(n=Count("id")).values_list("n", flat=True))
    assert per_lead[-1] > 4 * per_lead[len(per_lead) // 2]
    lead = Lead.objects.filter(tenant=tenant, last_activity_at__isnull=False).first()
    assert lead.last_activity_at == rows.filter(lead=lead).aggregate(m=Max("occurred_at"))["m"]
    assert {*Lead.objects.filter(tenant=tenant).values_list("source", flat=True)} == {
        "zillow",
        "referral",
        "open_house",
        "website",
        "paid_ads",
    }


def test_same_seed_same_data_and_a_second_load_is_refused(tenant, other_tenant):
    bulk_generate(tenant=tenant, leads=50, activities=400, seed=5, end=END)
    bulk_generate(tenant=other_tenant, leads=50, activities=400, seed=5, end=END)

    def shape(t: Tenant):
        return list(
            LeadActivity.objects.filter(tenant_id=t.id)
            .order_by("source_event_id")
            .values_list("lead__external_id", "kind", "occurred_at", "source_event_id")
        )

    assert shape(tenant) == shape(other_tenant)
    with pytest.raises(ValueError, match="already has bulk leads"):
        bulk_generate(tenant=tenant, leads=10, activities=10, seed=5, end=END)


def test_command_creates_the_tenant(db, capsys):
    call_command("simulate_bulk", "--tenant", "bench", "--leads", "40", "--activities", "200")
    assert Lead.objects.filter(tenant__slug="bench").count() == 40
    assert "40 leads and 200 activities" in capsys.readouterr().out


def _index_definitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass",
            [LeadActivity._meta.db_table],
        )
        return {row[0] for row in cursor.fetchall()}


def _shape(t: Tenant) -> list[tuple]:
    return list(
        LeadActivity.objects.filter(tenant_id=t.id)
        .order_by("source_event_id")
        .values_list("lead__external_id", "kind", "direction", "occurred_at", "source_event_id")
    )


def _clocks(t: Tenant) -> list[tuple]:
    return list(
        Lead.objects.filter(tenant=t)
        .order_by("external_id")
        .values_list("external_id", "last_activity_at", "last_inbound_at")
    )


def test_a_large_load_into_an_empty_table_builds_the_indexes_after_it(
    tenant, other_tenant, monkeypatch
):
    # given: an empty activity table and a load above the threshold
    monkeypatch.setattr(bulk, "DEFER_INDEXES_FROM", 1000)
    assert not LeadActivity.objects.exists()
    before = _index_definitions()

    # when: the first load (empty table) and the same seed again for another tenant (the
    # table now holds rows: its indexes are maintained as the rows go in)
    with CaptureQueriesContext(connection) as first:
        bulk_generate(tenant=tenant, leads=120, activities=3000, seed=8, end=END)
    with CaptureQueriesContext(connection) as second:
        bulk_generate(tenant=other_tenant, leads=120, activities=3000, seed=8, end=END)

    # then: only the first dropped and rebuilt them, the same indexes are in place after,
    # and both paths wrote the same rows and lead clocks
    def drops(ctx) -> int:
        return sum(q["sql"].startswith("DROP INDEX") for q in ctx.captured_queries)

    assert drops(first) == len(before) - 2  # all but the primary key and the unique pair
    assert drops(second) == 0
    assert _index_definitions() == before
    assert _shape(tenant) == _shape(other_tenant)
    assert len(_shape(tenant)) == 3000
    assert _clocks(tenant) == _clocks(other_tenant)
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadActivity.objects.create(
            tenant_id=tenant.id,
            lead=Lead.objects.filter(tenant=tenant).first(),
            kind="sms_inbound",
            direction="inbound",
            channel="sms",
            occurred_at=END,
            source_event_id="bulk:8:000000007",
        )


def test_a_table_in_use_is_not_locked_for_the_load(tenant, monkeypatch):
    # given: another session holds a lock on the (empty) activity table
    monkeypatch.setattr(bulk, "DEFER_INDEXES_FROM", 1000)
    monkeypatch.setattr(bulk, "INDEX_LOCK_WAIT", "200ms")
    before = _index_definitions()
    other = psycopg2.connect(
        **{
            k: v
            for k, v in connection.get_connection_params().items()
            if k in ("dbname", "user", "host", "port", "password")
        }
    )
    try:
        with other.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {LeadActivity._meta.db_table}")

        # when: a large load starts
        with CaptureQueriesContext(connection) as load:
            bulk_generate(tenant=tenant, leads=50, activities=2000, seed=4, end=END)
    finally:
        other.rollback()
        other.close()

    # then: it gave up on the lock, kept every index and wrote everything
    assert not any(q["sql"].startswith("DROP INDEX") for q in load.captured_queries)
    assert _index_definitions() == before
    assert LeadActivity.objects.filter(tenant_id=tenant.id).count() == 2000
