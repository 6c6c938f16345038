"""Runs the world against the real system on a simulated clock: setup, the hourly tick, and the collected truth."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal

import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.test import Client
from django.urls import reverse

from churnapp.models import Agent, AgentRole, Tenant
from churnapp.services.api_keys import api_key_create
from churnapp.services.tenants import tenant_create
from notifications.backends import locmem
from notifications.models import ChannelConfig, Message
from simulator import pipeline
from simulator.endpoint import WorldEndpoint
from simulator.world import AGENT_FACING, Event, World, WorldParams

log = logging.getLogger(__name__)

DEFAULT_START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
API_BATCH = 1000  # the bulk endpoints' limit
_OPEN = re.compile(r"/t/o/([A-Za-z0-9:_\-\.]+)")
_CLICK = re.compile(r"/t/c/([A-Za-z0-9:_\-\.]+)")
_STAGE = re.compile(r"stage(\d)")


@dataclass
class SimConfig:
    leads: int = 300
    days: int = 21
    seed: int = 1
    tenant_slug: str = "sim"
    holdout_percent: Decimal = Decimal("10")
    history_days: int = 14
    agents: int = 4
    start: dt.datetime = DEFAULT_START
    params: WorldParams = field(default_factory=WorldParams)
    progress: bool = False


@dataclass
class Counters:
    api_requests: int = 0
    activities_posted: int = 0
    webhooks_posted: int = 0
    tracking_hits: int = 0
    sends_seen: int = 0
    http_errors: list[str] = field(default_factory=list)


class Simulation:
    """One simulated brokerage. `run()` plays `days` simulated days, hour by hour:

    1. the world plays the hour; what its leads did reaches the system through its front
       doors: the activity bulk API (as the CRM pushes it) and signed GHL InboundMessage
       webhooks (replies, STOP);
    2. the clock moves to the end of the hour and the beat jobs due are published;
    3. the in-process ClockWorker runs every due task from the real broker (scoring,
       interventions, sends, webhook processing);
    4. what the system sent arrives at the world (the GHL endpoint, the agents' alert
       screen); the world decides delivery, bounces, opens, clicks and answers, and the
       system hears back through signed OutboundMessage status webhooks and the tracking
       pixel and click URLs. Answers are events of the next hour.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.world = World(
            n_leads=config.leads, seed=config.seed, start=config.start, params=config.params
        )
        self.counters = Counters()
        self.client = Client(HTTP_HOST="localhost", raise_request_exception=False)
        self.endpoint = WorldEndpoint()
        self.tenant: Tenant | None = None
        self._api_key = ""
        self._signing_key = ed25519.Ed25519PrivateKey.generate()
        self._saved_settings: dict = {}
        self._webhook_seq = 0
        self._locmem_seen = 0
        self._wire: dict[str, dict] = {}  # GHL message id -> the request body it came in
        self.worker = None
        self.runtime_seconds = 0.0
        self.phase_seconds: dict[str, float] = {}
        self.ticks = 0

    # --- setup --------------------------------------------------------------------------------
    def _settings_apply(self) -> None:
        """This process plays GHL: the webhook key is the world's, and the send rate limits
        count simulated seconds, so they are lifted (the world's endpoint has none)."""
        pem = (
            self._signing_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        overrides = {
            "GHL_WEBHOOK_ED25519_PUBLIC_KEY": pem,
            "NOTIFICATIONS_RATE_LIMITS": {
                "ghl": "100000 per 1 second",
                "twilio": "100000 per 1 second",
            },
        }
        for name, value in overrides.items():
            self._saved_settings[name] = getattr(settings, name, None)
            setattr(settings, name, value)

    def _settings_restore(self) -> None:
        for name, value in self._saved_settings.items():
            setattr(settings, name, value)
        self._saved_settings = {}

    def _tenant_setup(self) -> None:
        from interventions.services.policy import policy_ensure, policy_publish

        cfg = self.config
        if Tenant.objects.filter(slug=cfg.tenant_slug).exists():
            raise ValueError(
                f"tenant {cfg.tenant_slug!r} already exists; a simulation needs a new tenant"
            )
        self.tenant = tenant_create(
            slug=cfg.tenant_slug,
            name=f"Simulated Realty ({cfg.tenant_slug})",
            timezone="America/New_York",
            ghl_location_id=f"sim-loc-{cfg.tenant_slug}",
        )
        _, self._api_key = api_key_create(tenant=self.tenant, name="simulator")
        Agent.objects.create(
            tenant=self.tenant,
            name="Sim Manager",
            role=AgentRole.MANAGER,
            email=f"manager@{cfg.tenant_slug}.sim.example",
            ghl_user_id=f"sim-manager-{cfg.tenant_slug}",
        )
        for n in range(cfg.agents):
            Agent.objects.create(
                tenant=self.tenant,
                name=f"Sim Agent {n + 1}",
                email=f"agent{n + 1}@{cfg.tenant_slug}.sim.example",
                phone=f"+1555900{n:04d}",
                ghl_user_id=f"sim-agent-{cfg.tenant_slug}-{n + 1}",
            )
        channel_configs_point_at(tenant=self.tenant, endpoint=self.endpoint)
        policy = policy_ensure(tenant=self.tenant)
        if policy.holdout_percent != cfg.holdout_percent:
            policy_publish(
                policy=policy,
                changes={"holdout_percent": cfg.holdout_percent, "note": "simulation"},
            )

    # --- front doors --------------------------------------------------------------------------
    def _api(self, path: str, items: list[dict]) -> None:
        for start in range(0, len(items), API_BATCH):
            chunk = items[start : start + API_BATCH]
            response = self.client.post(
                path,
                data=json.dumps({"items": chunk}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Api-Key {self._api_key}",
            )
            self.counters.api_requests += 1
            if response.status_code >= 300:
                self._http_error(path, response)

    def _http_error(self, what: str, response) -> None:
        text = f"{what}: {response.status_code} {response.content[:300]!r}"
        log.warning("simulator front door refused: %s", text)
        if len(self.counters.http_errors) < 50:
            self.counters.http_errors.append(text)

    def _ghl_webhook(self, payload: dict) -> None:
        from django.utils import timezone

        self._webhook_seq += 1
        body = json.dumps(
            {
                "locationId": self.tenant.ghl_location_id,
                "webhookId": f"sim-wh-{self.tenant.slug}-{self.config.seed}-{self._webhook_seq}",
                "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
                **payload,
            }
        ).encode()
        signature = base64.b64encode(self._signing_key.sign(body)).decode()
        response = self.client.post(
            reverse("churnapp:webhook-ghl", args=[self.tenant.slug]),
            data=body,
            content_type="application/json",
            HTTP_X_GHL_SIGNATURE=signature,
        )
        self.counters.webhooks_posted += 1
        if response.status_code >= 300:
            self._http_error("ghl webhook", response)

    def _leads_post(self) -> None:
        agents = list(
            Agent.objects.filter(tenant=self.tenant, role=AgentRole.AGENT)
            .order_by("id")
            .values_list("ghl_user_id", flat=True)
        )
        items = []
        for p in self.world.profiles:
            items.append(
                {
                    "external_id": p.external_id,
                    "first_name": p.first_name,
                    "last_name": p.last_name,
                    "email": p.email,
                    "phone": p.phone,
                    "timezone": p.timezone,
                    "source": p.source,
                    "budget": str(p.budget),
                    "assigned_agent_ghl_user_id": agents[p.index % len(agents)],
                    "tags": [f"intent:{p.intent}", f"budget:{p.budget_band}"],
                    "custom_fields": {"intent": p.intent, "budget_band": p.budget_band},
                }
            )
        self._api("/api/leads/bulk/", items)

    def events_post(self, events: list[Event]) -> None:
        """Each event through the door it takes in life."""
        api_items = []
        for event in events:
            profile = self.world.profiles[event.lead]
            if event.via in ("sms_reply", "email_reply"):
                self._ghl_webhook(
                    {
                        "type": "InboundMessage",
                        "contactId": profile.external_id,
                        "messageId": event.event_id[:120],
                        "conversationId": f"conv-{profile.external_id}",
                        "messageType": "SMS" if event.via == "sms_reply" else "Email",
                        "direction": "inbound",
                        "body": event.body,
                        "dateAdded": event.at.isoformat().replace("+00:00", "Z"),
                        **({"subject": "Re: your homes"} if event.via == "email_reply" else {}),
                    }
                )
                continue
            api_items.append(
                {
                    "lead_external_id": profile.external_id,
                    "kind": event.kind,
                    "occurred_at": event.at.isoformat(),
                    "source_event_id": event.event_id,
                    "payload": {"simulated": True, **event.detail},
                }
            )
        if api_items:
            self.counters.activities_posted += len(api_items)
            self._api("/api/activities/bulk/", api_items)

    # --- what the system sent -----------------------------------------------------------------
    def _arrivals(self) -> list[Message]:
        """Messages that reached the world since the last look, oldest first."""
        received = self.endpoint.take()
        ids = [r.provider_id for r in received]
        self._wire.update({r.provider_id: r.body for r in received})
        messages = list(
            Message.objects.filter(tenant=self.tenant, provider_message_id__in=ids).select_related(
                "lead"
            )
        )
        # Workflow adds carry no message id of GHL's: they are ours, "workflow:<id>:<contact>".
        workflow_ids = [
            f"workflow:{r.provider_id}:{r.contact_id}" for r in received if r.kind == "workflow"
        ]
        if workflow_ids:
            messages += list(
                Message.objects.filter(
                    tenant=self.tenant, provider_message_id__in=workflow_ids, channel="ghl_workflow"
                )
                .exclude(pk__in=[m.pk for m in messages])
                .select_related("lead")
            )
        new_alerts = locmem.outbox[self._locmem_seen :]
        self._locmem_seen = len(locmem.outbox)
        alert_ids = [a["message_id"] for a in new_alerts]
        if alert_ids:
            messages += list(
                Message.objects.filter(tenant=self.tenant, pk__in=alert_ids).select_related("lead")
            )
        self.counters.sends_seen += len(messages)
        return sorted(messages, key=lambda m: m.pk)

    def _lead_index(self, message: Message) -> int | None:
        if message.lead is None:
            return None
        prefix = f"sim-{self.config.seed}-"
        external = message.lead.external_id
        return int(external[len(prefix) :]) if external.startswith(prefix) else None

    def deliveries_handle(self) -> int:
        """Let the world react to what arrived, until nothing new arrives (a bounce makes
        the system fall back to SMS, which arrives in the same tick)."""
        handled = 0
        for _round in range(10):
            messages = self._arrivals()
            if not messages:
                break
            for message in messages:
                self._react(message)
                handled += 1
            self.worker.drain()
        return handled

    def _react(self, message: Message) -> None:
        index = self._lead_index(message)
        if index is None:
            return
        agent_facing = message.agent_id is not None
        if agent_facing and message.channel not in AGENT_FACING:
            return  # a copy of an alert for the agent: no lead sees it
        match = _STAGE.search(message.template_key or "")
        stage = int(match.group(1)) if match else 0
        reaction = self.world.deliver(
            lead=index,
            stage=stage,
            channel=message.channel,
            variant=message.variant or "A",
            message_ref=str(message.pk),
        )
        if message.channel in ("sms", "email"):
            self._ghl_webhook(
                {
                    "type": "OutboundMessage",
                    "contactId": message.lead.external_id,
                    "messageId": message.provider_message_id,
                    "conversationId": f"conv-{message.lead.external_id}",
                    "messageType": "SMS" if message.channel == "sms" else "Email",
                    "direction": "outbound",
                    "status": "bounced" if reaction.bounced else "delivered",
                }
            )
        wire = self._wire.pop(message.provider_message_id, {})
        if message.channel == "email" and reaction.opened:
            html = str(wire.get("html") or "")
            for pattern, hit in ((_OPEN, True), (_CLICK, reaction.clicked)):
                found = pattern.search(html)
                if hit and found:
                    prefix = "/t/o/" if pattern is _OPEN else "/t/c/"
                    response = self.client.get(prefix + found.group(1))
                    self.counters.tracking_hits += 1
                    if response.status_code >= 400:
                        self._http_error("tracking " + prefix, response)

    # --- the run ---------------------------------------------------------------------------------
    def run(self) -> Simulation:
        from config.celery import app
        from simulator.worker import ClockWorker

        cfg = self.config
        hours = cfg.days * 24
        started = time.monotonic()
        self.endpoint.start()
        self._settings_apply()
        locmem.outbox.clear()
        pipeline.tasks_load(app)
        self.worker = ClockWorker(app, list(settings.CELERY_QUEUE_NAMES))
        self.worker.purge()
        history_start = cfg.start - dt.timedelta(days=cfg.history_days)
        traveller = time_machine.travel(history_start, tick=False)
        clock = traveller.start()
        bar = _progress(hours, cfg.progress)
        # Thousands of task runs per simulated day: keep the per-task success lines out.
        trace_log = logging.getLogger("celery.app.trace")
        trace_level = trace_log.level
        trace_log.setLevel(logging.WARNING)
        try:
            self._tenant_setup()
            self._leads_post()
            clock.move_to(cfg.start)
            self.events_post(self.world.backfill(cfg.history_days * 24))
            self.worker.drain()
            self.phase_seconds["setup_and_history"] = time.monotonic() - started
            for hour in range(hours):
                mark = time.monotonic()
                events = self.world.step()
                clock.move_to(cfg.start + dt.timedelta(hours=hour + 1))
                mark = self._phase("world", mark)
                self.events_post(events)
                self.worker.drain()
                mark = self._phase("leads_to_system", mark)
                self._beat(hour + 1)
                self.worker.drain()
                mark = self._phase("beat_jobs", mark)
                self.deliveries_handle()
                self._phase("sends_to_world", mark)
                self.ticks += 1
                bar.update(1)
        finally:
            bar.close()
            trace_log.setLevel(trace_level)
            traveller.stop()
            self._settings_restore()
            self.endpoint.stop()
            self.worker.close()
        self.runtime_seconds = time.monotonic() - started
        return self

    def _phase(self, name: str, mark: float) -> float:
        now = time.monotonic()
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + now - mark
        return now

    def _beat(self, hour: int) -> None:
        from config.celery import app

        due = pipeline.beat_due(app, hour, self.config.start + dt.timedelta(hours=hour))
        if "churnapp.rescore_all_tenants" not in app.tasks:
            mark = time.monotonic()
            pipeline.silence_tiers_apply(tenant=self.tenant)
            self._phase("stand_in_scoring", mark)
        for name in due:
            pipeline.beat_publish(app, name, tenant=self.tenant)


def channel_configs_point_at(
    *, tenant: Tenant, endpoint: WorldEndpoint, agent_alerts: bool = True
) -> None:
    """The tenant's GHL channels send to the world's endpoint; agent alerts go to the
    in-process alert screen (locmem) the simulated agents watch, unless `agent_alerts` is
    False (the demo keeps them on the real dashboard)."""
    ghl = {
        "sms": "notifications.backends.ghl.GhlSmsBackend",
        "email": "notifications.backends.ghl.GhlEmailBackend",
        "ghl_task": "notifications.backends.ghl.GhlTaskBackend",
        "ghl_workflow": "notifications.backends.ghl.GhlWorkflowBackend",
    }
    options = {"base_url": endpoint.url, "api_token": endpoint.token}
    for channel, backend in ghl.items():
        extra = {"workflow_id": "sim-nurture"} if channel == "ghl_workflow" else {}
        ChannelConfig.objects.update_or_create(
            tenant=tenant,
            channel=channel,
            defaults={"backend": backend, "options": {**options, **extra}, "is_active": True},
        )
    if not agent_alerts:
        return
    ChannelConfig.objects.update_or_create(
        tenant=tenant,
        channel="agent_alert",
        defaults={"backend": "notifications.backends.locmem.LocmemBackend", "options": {}},
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="h", desc="simulated hours")
