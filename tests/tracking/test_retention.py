"""The nightly job: rollups replace a day's rows idempotently, then raw lifecycle events
past retention are purged while the rollups keep answering the same totals."""

from __future__ import annotations

import datetime as dt

from django.conf import settings as django_settings
from django.utils import timezone

from tests.tracking.conftest import at
from tracking.events import tracking_event_record
from tracking.models import InterventionDailyRollup, RollupDay, TrackingEvent, TrackingSettings
from tracking.selectors import analytics_impact, analytics_success, period_resolve
from tracking.services.rollups import rollup_days, tracking_daily_maintain
from tracking.tasks import tracking_tenant_daily


def _history(world, days_ago: list[int]) -> None:
    today = timezone.now().date()
    for n, ago in enumerate(days_ago):
        day = today - dt.timedelta(days=ago)
        iv = world.intervention(
            started=at(day, 8),
            resolved=at(day, 20),
            outcome="re_engaged" if n % 3 else "churned",
            is_holdout=n % 4 == 0,
        )
        for kind in ("intervention_started", "outcome_recorded"):
            tracking_event_record(
                tenant_id=world.tenant.id,
                kind=kind,
                lead_id=iv.lead_id,
                intervention_id=iv.id,
                stage=1,
                occurred_at=at(day, 8 if kind == "intervention_started" else 20),
            )


def test_retention_purges_raw_rows_but_keeps_rollups_that_answer_the_same_totals(
    world, other_world, settings
):
    # given history in two tenants (300 and 400 days); the other keeps events a year
    settings.TRACKING_ROLLUP_RESTATE_DAYS = 320
    settings.TRACKING_MIN_ARM_SIZE = 1
    _history(world, [300, 250, 200, 190, 181, 179, 100, 30, 5, 2] * 3)
    _history(other_world, [400, 200, 5])
    TrackingSettings.objects.create(tenant=other_world.tenant, retention_days=365)
    today = timezone.now().date()
    period = period_resolve(date_from=today - dt.timedelta(days=310), date_to=today)
    success_live = analytics_success(tenant=world.tenant, period=period)
    impact_live = analytics_impact(tenant=world.tenant, period=period)
    assert success_live["period"]["days_from_raw"] == period.days
    assert success_live["success"]["overall"]["n"] > 0

    # when the nightly job runs for both tenants
    tracking_daily_maintain(tenant_id=world.tenant.id, today=today)
    tracking_tenant_daily.apply(args=[other_world.tenant.id]).get()

    # then events older than 180 days are gone, younger ones stay
    cutoff = timezone.now() - dt.timedelta(days=180)
    logged = ("intervention_started", "outcome_recorded")
    mine = TrackingEvent.objects.filter(tenant=world.tenant, kind__in=logged)
    assert not mine.filter(occurred_at__lt=cutoff).exists()
    assert mine.count() == 2 * 3 * 5  # 179, 100, 30, 5 and 2 days ago, 3 times
    # the other tenant keeps a year: only its 400-day-old events went
    theirs = TrackingEvent.objects.filter(tenant=other_world.tenant, kind__in=logged)
    assert theirs.count() == 4
    # and every day up to yesterday is answered from rollups, with the same totals
    success_rolled = analytics_success(tenant=world.tenant, period=period)
    impact_rolled = analytics_impact(tenant=world.tenant, period=period)
    assert success_rolled["period"]["days_from_rollups"] == period.days - 1  # today is live
    for report in (success_live, success_rolled, impact_live, impact_rolled):
        report.pop("period")
    assert success_rolled == success_live
    assert impact_rolled == impact_live


def test_rerunning_a_day_replaces_its_rows(world):
    day = dt.date(2026, 4, 1)
    world.intervention(started=at(day), resolved=at(day, 18), outcome="converted")
    rollup_days(tenant_id=world.tenant.id, first_day=day, last_day=day)
    first = list(InterventionDailyRollup.objects.values("started", "resolved", "successes"))
    # a late outcome changes the day; re-running replaces, never adds
    world.intervention(started=at(day), resolved=at(day, 19), outcome="churned")
    rollup_days(tenant_id=world.tenant.id, first_day=day, last_day=day)
    rollup_days(tenant_id=world.tenant.id, first_day=day, last_day=day)
    rows = InterventionDailyRollup.objects.filter(tenant=world.tenant, day=day)
    assert first == [{"started": 1, "resolved": 1, "successes": 1}]
    assert sum(r.started for r in rows) == 2 and sum(r.successes for r in rows) == 1
    assert RollupDay.objects.filter(tenant=world.tenant, day=day).count() == 1


def test_the_nightly_job_is_scheduled_on_a_named_queue():
    entry = django_settings.CELERY_BEAT_SCHEDULE["tracking-daily"]
    assert entry["task"] == "tracking.daily"
    assert entry["options"]["queue"] in django_settings.CELERY_QUEUE_NAMES
