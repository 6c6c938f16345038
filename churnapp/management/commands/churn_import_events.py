"""Import a CSV event log for a tenant in bulk (COPY), creating unknown leads."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from churnapp.exceptions import ApplicationError
from churnapp.management.commands._tenant_arg import tenant_from_arg
from churnapp.services.event_import import events_import


class Command(BaseCommand):
    help = (
        "Load FILE (CSV with a header: lead external id, timestamp, kind, optional value) "
        "into a tenant's activity history with one COPY. Kinds are mapped with --kind-map "
        "RAW=KIND; unknown kinds abort the import (or are skipped and counted with "
        "--skip-unknown). Importing the same file twice creates nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--lead-column", default="lead_external_id")
        parser.add_argument("--time-column", default="occurred_at")
        parser.add_argument("--kind-column", default="kind")
        parser.add_argument("--value-column", default="value")
        parser.add_argument("--kind-map", action="append", default=[], metavar="RAW=KIND")
        parser.add_argument("--skip-unknown", action="store_true")
        parser.add_argument("--time-zone", default="UTC", help="for timestamps without offset")

    def handle(self, *args, **options):
        tenant = tenant_from_arg(options["tenant"])
        kind_map = {}
        for pair in options["kind_map"]:
            raw, sep, kind = pair.partition("=")
            if not sep or not raw or not kind:
                raise CommandError(f"--kind-map {pair!r} is not RAW=KIND.")
            kind_map[raw.strip()] = kind.strip()
        try:
            with open(options["file"], newline="") as stream:
                report = events_import(
                    tenant=tenant,
                    stream=stream,
                    lead_column=options["lead_column"],
                    time_column=options["time_column"],
                    kind_column=options["kind_column"],
                    value_column=options["value_column"],
                    kind_map=kind_map,
                    skip_unknown=options["skip_unknown"],
                    time_zone=options["time_zone"],
                )
        except FileNotFoundError:
            raise CommandError(f"No such file: {options['file']}")
        except ApplicationError as exc:
            raise CommandError(exc.message)
        self.stdout.write(
            f"read {report.rows_read} rows: {report.activities_created} activities created, "
            f"{report.duplicates} already present, {report.leads_created} new leads"
        )
        for kind, n in sorted(report.unknown_kinds.items()):
            self.stdout.write(self.style.WARNING(f"skipped {n} rows of unknown kind {kind!r}"))
