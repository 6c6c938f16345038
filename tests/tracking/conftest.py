"""Builders of interventions, messages and escalations with chosen times and outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import warnings
from decimal import Decimal

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from churnapp.factories import LeadFactory
from interventions.models import (
    Escalation,
    Intervention,
    InterventionStatus,
    InterventionStep,
    MessageVariant,
    StepStatus,
)
from interventions.services.policy import policy_ensure
from notifications.models import Message

UTC = dt.UTC


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=UTC)


class World:
    """Writes rows of one tenant as they would be after the orchestration ran."""

    def __init__(self, tenant):
        self.tenant = tenant
        self.policy = policy_ensure(tenant=tenant)
        self._n = 0

    def lead(self, **fields):
        return LeadFactory(tenant=self.tenant, **fields)

    def variant(self, stage: int, key: str) -> MessageVariant:
        return MessageVariant.objects.get_or_create(tenant=self.tenant, stage=stage, key=key)[0]

    def intervention(
        self,
        *,
        started: dt.datetime,
        outcome: str = "",
        resolved: dt.datetime | None = None,
        stage: int = 1,
        episode: int | None = None,
        is_holdout: bool = False,
        lead=None,
        variant: str | None = "A",
        tier: str = "early_warning",
        channel: str | None = "email",
        sent_after: dt.timedelta | None = dt.timedelta(minutes=10),
        delivered_after: dt.timedelta | None = dt.timedelta(minutes=11),
        cost: Decimal | None = None,
        provider: str = "smtp",
        **lead_fields,
    ) -> Intervention:
        self._n += 1
        lead = lead or self.lead(**lead_fields)
        resolved = resolved if resolved is not None else (started + dt.timedelta(days=1))
        status = InterventionStatus.RESOLVED if outcome else InterventionStatus.ACTIVE
        iv = Intervention.objects.create(
            tenant=self.tenant,
            lead=lead,
            episode=episode or self._n,
            stage=stage,
            policy=self.policy,
            variant=None if is_holdout or variant is None else self.variant(stage, variant),
            is_holdout=is_holdout,
            status=status,
            outcome=outcome,
            tier_at_start=tier,
            detected_at=started - dt.timedelta(minutes=5),
            window_ends_at=started + dt.timedelta(days=3),
            activated_at=started,
        )
        Intervention.objects.filter(pk=iv.pk).update(
            planned_at=started, resolved_at=resolved if outcome else None
        )
        if not is_holdout and channel:
            sent = started + sent_after if sent_after is not None else None
            message = self.message(
                iv,
                channel=channel,
                created=started,
                sent=sent,
                delivered=started + delivered_after if sent and delivered_after else None,
                cost=cost,
                provider=provider,
            )
            InterventionStep.objects.create(
                intervention=iv,
                position=0,
                channel=channel,
                recipient="lead",
                status=StepStatus.REQUESTED,
                message=message,
            )
        iv.refresh_from_db()
        return iv

    def message(
        self,
        iv: Intervention,
        *,
        channel: str,
        created: dt.datetime,
        sent: dt.datetime | None,
        delivered: dt.datetime | None = None,
        opened: dt.datetime | None = None,
        replied: dt.datetime | None = None,
        cost: Decimal | None = None,
        provider: str = "smtp",
        status: str | None = None,
    ) -> Message:
        message = Message.objects.create(
            tenant=self.tenant,
            lead=iv.lead,
            channel=channel,
            idempotency_key=f"test:{iv.pk}:{channel}:{Message.objects.count()}",
            status=status or ("delivered" if delivered else "sent" if sent else "queued"),
            sent_at=sent,
            delivered_at=delivered,
            opened_at=opened,
            replied_at=replied,
            cost=cost,
            provider=provider,
            variant=iv.variant.key if iv.variant_id else "",
            metadata={"intervention_id": iv.pk, "step": 0},
        )
        Message.objects.filter(pk=message.pk).update(created_at=created)
        return message

    def escalation(
        self,
        iv: Intervention,
        *,
        opened: dt.datetime,
        acknowledged: dt.datetime | None = None,
        resolved: dt.datetime | None = None,
        breached: dt.datetime | None = None,
    ) -> Escalation:
        esc = Escalation.objects.create(
            tenant=self.tenant,
            intervention=iv,
            lead=iv.lead,
            status="resolved" if resolved else "acknowledged" if acknowledged else "open",
            sla_due_at=opened + dt.timedelta(hours=4),
            acknowledged_at=acknowledged,
            resolved_at=resolved,
            breached_at=breached,
        )
        Escalation.objects.filter(pk=esc.pk).update(opened_at=opened)
        return esc


@pytest.fixture
def world(tenant) -> World:
    return World(tenant)


@pytest.fixture
def other_world(other_tenant) -> World:
    return World(other_tenant)


class LoopThread:
    """One event loop in a thread: a channel's receive buffer is bound to the loop that
    first used it, so every call on the member's side runs on this one loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._inboxes: dict[str, asyncio.Queue] = {}

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def receive(self, layer, channel: str, timeout: float):
        """The next message on `channel`, or None after `timeout` seconds.

        The first call starts one receive on the channel that lasts until close(); each
        call then waits on that receive's inbox. A receive per call would be wrong here:
        channels-redis's pub/sub layer unsubscribes a channel whose receive is cancelled
        (it takes the cancel for the consumer leaving), so a timed-out receive drops the
        channel, and a message published before the next call re-subscribed it was lost
        (seen once in CI)."""

        async def go():
            inbox = self._inboxes.get(channel)
            if inbox is None:
                inbox = self._inboxes[channel] = asyncio.Queue()

                async def pump():
                    while True:
                        inbox.put_nowait(await layer.receive(channel))

                asyncio.ensure_future(pump())
            try:
                return await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                return None

        return self.run(go())

    # How long close() waits for cancelled tasks to finish. A refused consumer still holds
    # a channel-layer receive (channels-redis BZPOPMIN on a pooled connection); cancelled
    # mid-read it has, once in a full CI run, never finished, and an unbounded gather here
    # hung the teardown for the whole pytest timeout. The test's assertions are done by now.
    DRAIN_SECONDS = 10

    def close(self):
        async def drain():
            # Cancel what is left (a communicator's app, a timed-out receive) cleanly.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.DRAIN_SECONDS)
                for task in pending:
                    warnings.warn(
                        f"loop thread closed with a task still running: {task!r}", stacklevel=1
                    )

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread():
    """A loop thread, and a fresh default channel layer (a layer's receive side stays
    bound to the loop that used it, so tests must not share one)."""
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    thread = LoopThread()
    yield thread
    thread.close()
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
