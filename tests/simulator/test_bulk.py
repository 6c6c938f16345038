"""The bulk generator writes exactly what it is asked for, in churnapp's vocabulary."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db.models import Count, Max

from churnapp.models import KIND_CHANNEL, KIND_DIRECTION, Lead, LeadActivity, Tenant
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
