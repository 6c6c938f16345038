"""The demo's living world: seed a tenant from the simulator once, then keep its leads living in real time."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from django.utils import timezone

from churnapp.models import Agent, AgentRole, Lead, Tenant
from churnapp.services.api_keys import api_key_create
from simulator.harness import SimConfig, Simulation, channel_configs_point_at
from simulator.world import World

log = logging.getLogger(__name__)


class LiveSimulation(Simulation):
    """A Simulation on the real clock for an existing tenant (the demo). The system's own
    worker and beat (from `manage.py up`) do the work; this process only plays the world:
    each hour's events are posted when real time reaches them, sends arrive at the world's
    endpoint over HTTP, and answers come back through the same front doors."""

    def __init__(self, config: SimConfig, tenant: Tenant) -> None:
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        super().__init__(replace(config, start=now))
        self.tenant = tenant
        self.world = World(n_leads=config.leads, seed=config.seed, start=now, params=config.params)

    def attach(self) -> None:
        """Point the tenant's GHL channels at this process's endpoint and make sure it
        has agents; the API key is a fresh one named for the simulator."""
        self.endpoint.start()
        self._settings_apply()
        _, self._api_key = api_key_create(tenant=self.tenant, name="demo simulator")
        if not Agent.objects.filter(tenant=self.tenant, role=AgentRole.AGENT).exists():
            for n in range(3):
                Agent.objects.create(
                    tenant=self.tenant,
                    name=f"Demo Agent {n + 1}",
                    email=f"agent{n + 1}@{self.tenant.slug}.sim.example",
                    ghl_user_id=f"sim-agent-{self.tenant.slug}-{n + 1}",
                )
        if not self.tenant.ghl_location_id:
            self.tenant.ghl_location_id = f"sim-loc-{self.tenant.slug}"
            self.tenant.save(update_fields=["ghl_location_id"])
        channel_configs_point_at(tenant=self.tenant, endpoint=self.endpoint, agent_alerts=False)

    def seeded(self) -> bool:
        prefix = f"sim-{self.config.seed}-"
        return Lead.objects.filter(tenant=self.tenant, external_id__startswith=prefix).exists()

    def seed(self) -> int:
        """Post the leads and their history (ending now) through the API; returns how many
        activities went in. The world's later hours continue from that history."""
        self._leads_post()
        events = self.world.backfill(self.config.history_days * 24)
        self.events_post(events)
        return len(events)

    def live(self, *, hours: float | None = None, poll_seconds: float = 2.0) -> None:
        """Play hour after hour in real time until `hours` have passed (None: forever)."""
        started = time.monotonic()
        pending = []
        next_hour = self.world.at(self.world.hour)
        while hours is None or time.monotonic() - started < hours * 3600:
            try:
                now = timezone.now()
                if now >= next_hour:
                    pending += self.world.step()
                    next_hour = self.world.at(self.world.hour)
                due = [e for e in pending if e.at <= now]
                if due:
                    pending = [e for e in pending if e.at > now]
                    self.events_post(due)
                for message in self._arrivals():
                    self._react(message)
            except Exception:
                # A demo world that stops on a database blip would leave the dashboard
                # still; log it and carry on with the next poll.
                log.exception("demo simulation: one step failed; going on")
            time.sleep(poll_seconds)

    def close(self) -> None:
        self._settings_restore()
        self.endpoint.stop()


def demo_seed(*, tenant: Tenant, leads: int = 150, seed: int = 1, history_days: int = 21) -> int:
    """Give the tenant simulated leads with `history_days` of past activity, once.
    Returns the number of activities posted (0 when already seeded)."""
    sim = LiveSimulation(
        SimConfig(leads=leads, seed=seed, history_days=history_days, tenant_slug=tenant.slug),
        tenant,
    )
    if sim.seeded():
        return 0
    sim.attach()
    try:
        return sim.seed()
    finally:
        sim.close()
