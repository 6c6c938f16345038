"""manage.py simulate_bulk: COPY a large seeded population of leads and activities into a tenant."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from churnapp.models import Tenant
from churnapp.services.tenants import tenant_create
from simulator.bulk import bulk_generate


class Command(BaseCommand):
    help = "Bulk-load leads and activities for benchmarks (PostgreSQL COPY), e.g. 1M / 30M."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Slug; created if missing.")
        parser.add_argument("--leads", type=int, default=10_000)
        parser.add_argument("--activities", type=int, default=300_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, **options) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            tenant = tenant_create(slug=options["tenant"], name=f"Bulk {options['tenant']}")
        try:
            result = bulk_generate(
                tenant=tenant,
                leads=options["leads"],
                activities=options["activities"],
                days=options["days"],
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        rate = (result.leads + result.activities) / max(result.seconds, 1e-9)
        self.stdout.write(
            f"{result.leads} leads and {result.activities} activities for {tenant.slug} "
            f"in {result.seconds:.1f} s ({rate:,.0f} rows/s)"
        )
