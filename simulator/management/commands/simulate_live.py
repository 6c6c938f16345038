"""manage.py simulate_live: seed the demo tenant from the simulator once, then keep its leads living in real time."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from churnapp.models import Tenant
from simulator.harness import SimConfig
from simulator.live import LiveSimulation


class Command(BaseCommand):
    help = (
        "Seed a tenant (default: demo) with simulated leads and history on first run, then "
        "play their lives in real time through the API and signed GHL webhooks, so the "
        "dashboard is alive. Needs the worker and beat of `manage.py up` running."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", default="demo")
        parser.add_argument("--leads", type=int, default=150)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--history-days", type=int, default=21)
        parser.add_argument("--hours", type=float, default=None, help="Stop after this long.")
        parser.add_argument("--seed-only", action="store_true", help="Seed, then exit.")

    def handle(self, *args, **options) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['tenant']!r}; run `manage.py demo_setup`")
        sim = LiveSimulation(
            SimConfig(
                leads=options["leads"],
                seed=options["seed"],
                history_days=options["history_days"],
                tenant_slug=tenant.slug,
            ),
            tenant,
        )
        sim.attach()
        try:
            if sim.seeded():
                # Replay the history without posting it, so the world resumes in step.
                sim.world.backfill(options["history_days"] * 24)
                self.stdout.write(f"simulate_live: {tenant.slug} already seeded")
            else:
                n = sim.seed()
                self.stdout.write(f"simulate_live: seeded {tenant.slug} with {n} activities")
            if not options["seed_only"]:
                self.stdout.write("simulate_live: leads are living (Ctrl-C stops)")
                sim.live(hours=options["hours"])
        except KeyboardInterrupt:
            pass
        finally:
            sim.close()
