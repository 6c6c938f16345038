"""Load the deterministic synthetic history into a tenant (demo and training data)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from churnapp.management.commands._tenant_arg import tenant_from_arg
from churnapp.ml.synthetic import history_generate
from churnapp.services.event_import import events_csv_write, synthetic_history_load


class Command(BaseCommand):
    help = "Generate N synthetic leads with DAYS of history ending now; load them or write a CSV."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--leads", type=int, default=300)
        parser.add_argument("--days", type=int, default=180)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--csv", help="write the events to this CSV instead of loading them")

    def handle(self, *args, **options):
        tenant = tenant_from_arg(options["tenant"])
        leads, events = history_generate(
            n_leads=options["leads"], days=options["days"], end=timezone.now(), seed=options["seed"]
        )
        if options["csv"]:
            with open(options["csv"], "w", newline="") as out:
                n = events_csv_write(events, out)
            self.stdout.write(f"wrote {n} events of {len(leads)} leads to {options['csv']}")
            return
        report = synthetic_history_load(tenant=tenant, leads=leads, events=events)
        self.stdout.write(
            f"loaded {len(leads)} leads, {report.activities_created} activities into {tenant.slug}"
        )
