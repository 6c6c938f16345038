"""manage.py simulate: run the real pipeline over simulated days against a seeded world and report."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from simulator.analysis import report_build
from simulator.harness import DEFAULT_START, SimConfig, Simulation
from simulator.pipeline import other_live_tenants
from simulator.report import markdown, report_write


class Command(BaseCommand):
    help = (
        "Simulate a brokerage: N seeded leads live D days on a simulated clock; their "
        "activity, replies and delivery receipts reach the real system through its API, "
        "signed GHL webhooks and tracking URLs. Prints and writes a report (Markdown, PNG)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--leads", type=int, default=500)
        parser.add_argument("--days", type=int, default=28)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--tenant", default="", help="Slug of a NEW tenant (default sim-<seed>-<n>)."
        )
        parser.add_argument("--out", default="", help="Directory for report.md, PNGs, report.json.")
        parser.add_argument(
            "--holdout", type=Decimal, default=Decimal("10"), help="Holdout percent (policy)."
        )
        parser.add_argument("--history-days", type=int, default=14)
        parser.add_argument(
            "--start", default=DEFAULT_START.date().isoformat(), help="Simulated start date (UTC)."
        )
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--shared-db",
            action="store_true",
            help="Run even though other tenants have open interventions: the global beat "
            "jobs would move their windows along with the simulated clock.",
        )

    def handle(self, *args, **options) -> None:
        if options["leads"] < 1 or options["days"] < 1:
            raise CommandError("--leads and --days must be at least 1")
        if not Decimal("0") <= options["holdout"] <= Decimal("100"):
            raise CommandError("--holdout is a percentage between 0 and 100")
        try:
            start = dt.datetime.fromisoformat(options["start"]).replace(tzinfo=dt.UTC)
        except ValueError as exc:
            raise CommandError(f"--start: {exc}") from exc
        slug = options["tenant"] or f"sim-{options['seed']}-{options['leads']}"
        others = other_live_tenants(tenant_slug=slug)
        if others and not options["shared_db"]:
            raise CommandError(
                "other tenants have open interventions in this database "
                f"({', '.join(others[:5])}); the simulated clock would resolve their windows "
                "too. Use a dedicated database (DATABASE_URL) or pass --shared-db."
            )
        config = SimConfig(
            leads=options["leads"],
            days=options["days"],
            seed=options["seed"],
            tenant_slug=slug,
            holdout_percent=options["holdout"],
            history_days=options["history_days"],
            start=start,
            progress=not options["no_progress"],
        )
        try:
            sim = Simulation(config).run()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        report = report_build(sim)
        self.stdout.write(markdown(report))
        if options["out"]:
            path = report_write(report, options["out"])
            self.stdout.write(self.style.SUCCESS(f"report written to {path}"))
