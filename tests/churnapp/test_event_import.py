"""churn_import_events: a CSV event log through COPY, kinds mapped or reported."""

import csv
import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.ml.synthetic import history_generate
from churnapp.models import Lead, LeadActivity, LeadStatus


def _write_log(path, *, extra_rows=()):
    leads, events = history_generate(n_leads=25, days=60, end=timezone.now(), seed=5)
    with path.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["contact", "ts", "event", "amount"])
        for e in events:
            kind = "purchase" if e.kind == "form_submit" else e.kind
            w.writerow([e.lead_external_id, e.occurred_at.isoformat(), kind, e.value or ""])
        for row in extra_rows:
            w.writerow(row)
    return leads, events


def _import(path, tenant, *args):
    out = io.StringIO()
    call_command(
        "churn_import_events",
        str(path),
        "--tenant",
        tenant.slug,
        "--lead-column",
        "contact",
        "--time-column",
        "ts",
        "--kind-column",
        "event",
        "--value-column",
        "amount",
        *args,
        stdout=out,
    )
    return out.getvalue()


def test_unknown_kinds_abort_with_counts_and_nothing_is_written(tenant, tmp_path):
    path = tmp_path / "log.csv"
    _write_log(path, extra_rows=[("x-1", timezone.now().isoformat(), "teleport", "")])
    with pytest.raises(CommandError) as err:
        _import(path, tenant)
    assert "'purchase'" in str(err.value) and "'teleport' x1" in str(err.value)
    assert LeadActivity.objects.filter(tenant=tenant).count() == 0
    assert Lead.objects.filter(tenant=tenant).count() == 0


def test_mapped_import_creates_leads_and_activities_once(tenant, tmp_path):
    # given: a log with a custom kind, one junk kind, and a lead we already know
    path = tmp_path / "log.csv"
    known = LeadFactory(tenant=tenant, external_id="syn-00000")
    leads, events = _write_log(path, extra_rows=[("syn-00001", "2026-01-02 10:00", "teleport", "")])
    # when
    output = _import(path, tenant, "--kind-map", "purchase=form_submit", "--skip-unknown")
    # then
    assert "activities created" in output and "skipped 1 rows of unknown kind 'teleport'" in output
    assert LeadActivity.objects.filter(tenant=tenant).count() == len(events)
    assert LeadActivity.objects.filter(tenant=tenant, kind="form_submit").count() == sum(
        e.kind == "form_submit" for e in events
    )
    ext_ids = {e.lead_external_id for e in events}
    assert set(Lead.objects.filter(tenant=tenant).values_list("external_id", flat=True)) == ext_ids
    assert Lead.objects.filter(pk=known.pk).exists()
    # lead clocks and statuses follow the imported history
    lost = {e.lead_external_id for e in events if e.kind == "opportunity_lost"}
    assert (
        set(
            Lead.objects.filter(tenant=tenant, status=LeadStatus.LOST).values_list(
                "external_id", flat=True
            )
        )
        == lost
    )
    some = Lead.objects.filter(tenant=tenant).exclude(pk=known.pk).first()
    last_event = max(e.occurred_at for e in events if e.lead_external_id == some.external_id)
    assert some.last_activity_at == last_event
    assert some.crm_created_at == min(
        e.occurred_at for e in events if e.lead_external_id == some.external_id
    )
    # re-importing the same file creates nothing new
    again = _import(path, tenant, "--kind-map", "purchase=form_submit", "--skip-unknown")
    assert "0 activities created" in again
    assert LeadActivity.objects.filter(tenant=tenant).count() == len(events)


def test_bad_timestamp_and_missing_column_are_clear_errors(tenant, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("contact,ts,event,amount\nx-1,not-a-date,sms_inbound,\n")
    with pytest.raises(CommandError, match="cannot be read"):
        _import(path, tenant)
    with pytest.raises(CommandError, match="Missing column"):
        call_command("churn_import_events", str(path), "--tenant", tenant.slug)
    assert LeadActivity.objects.filter(tenant=tenant).count() == 0


def test_naive_timestamps_read_in_the_given_time_zone(tenant, tmp_path):
    path = tmp_path / "tz.csv"
    path.write_text("lead_external_id,occurred_at,kind\nx-1,2026-03-01 09:00,sms_inbound\n")
    call_command(
        "churn_import_events",
        str(path),
        "--tenant",
        tenant.slug,
        "--time-zone",
        "America/Chicago",
        stdout=io.StringIO(),
    )
    activity = LeadActivity.objects.get(tenant=tenant)
    assert activity.occurred_at == dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.UTC)
    assert activity.direction == "inbound" and activity.channel == "sms"
