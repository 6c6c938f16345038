"""Real-time rescore hints: NOTIFY with the ingest's commit, one relay among the workers
turning them into rescore_leads tasks (churnapp.hints)."""

from __future__ import annotations

import select
import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone

from churnapp.factories import LeadFactory
from churnapp.hints import CHANNEL, HintRelay, parse
from churnapp.models import Lead
from churnapp.services.activities import ActivityInput, activities_ingest
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A raw LISTEN connection of the test's own: what PostgreSQL delivered, parsed."""

    def __init__(self) -> None:
        self.db = connections.create_connection("default")
        self.db.ensure_connection()
        self.db.set_autocommit(True)
        with self.db.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self.payloads: list[str] = []

    def drain(self, wait: float) -> list[str]:
        raw = self.db.connection
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if select.select([raw], [], [], left)[0]:
                raw.poll()
                self.payloads += [n.payload for n in raw.notifies]
                raw.notifies.clear()
        return self.payloads

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def listener():
    listening = Listener()
    yield listening
    listening.close()


class Enqueued:
    """The relay's enqueue, recorded (the Celery enqueue itself is the worker test's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.lock = threading.Lock()

    def __call__(self, tenant_id: int, lead_ids: list[int]) -> None:
        with self.lock:
            self.calls.append((tenant_id, list(lead_ids)))

    def ids(self, tenant_id: int) -> set[int]:
        with self.lock:
            return {i for t, ids in self.calls if t == tenant_id for i in ids}


@pytest.fixture
def relays():
    started: list[HintRelay] = []

    def start(**kwargs) -> HintRelay:
        relay = HintRelay(poll_seconds=0.1, **kwargs).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def _ingest(lead: Lead, kind: str, event_id: str, direction: str = "inbound") -> None:
    activities_ingest(
        tenant=lead.tenant,
        items=[
            ActivityInput(
                lead_external_id=lead.external_id,
                kind=kind,
                occurred_at=timezone.now(),
                source_event_id=event_id,
                direction=direction,
            )
        ],
    )


def test_a_committed_inbound_activity_hints_its_lead_and_a_rolled_back_one_does_not(
    tenant, listener
):
    # given
    inbound, outbound, rolled_back = LeadFactory.create_batch(3, tenant=tenant)
    # when
    _ingest(inbound, "sms_inbound", "in-1")
    _ingest(outbound, "sms_outbound", "out-1", direction="outbound")
    with pytest.raises(RuntimeError), transaction.atomic():
        _ingest(rolled_back, "sms_inbound", "in-2")
        raise RuntimeError("the request failed after the ingest")
    # then only the committed inbound activity's lead was hinted
    assert parse(listener.drain(wait=1.0)) == {tenant.id: {inbound.id}}


def test_a_batch_of_many_leads_is_hinted_in_several_notifications_and_relayed_whole(
    tenant, listener, relays
):
    # given a relay, and 1,200 leads with a reply each
    enqueued = Enqueued()
    relay = relays(enqueue=enqueued)
    assert relay.active.wait(10)
    leads = Lead.objects.bulk_create(
        Lead(tenant=tenant, external_id=f"many-{k}") for k in range(1_200)
    )
    now = timezone.now()
    # when they arrive in two batches (a request holds 1,000 at most) that commit together
    with transaction.atomic():
        for batch in (leads[:1_000], leads[1_000:]):
            activities_ingest(
                tenant=tenant,
                items=[
                    ActivityInput(
                        lead_external_id=lead.external_id,
                        kind="sms_inbound",
                        occurred_at=now,
                        source_event_id=f"many-{lead.id}",
                    )
                    for lead in batch
                ],
            )
    # then three notifications (500 ids each at most: 500 + 500, then 200) carried them, and every lead was
    # enqueued, in tasks of at most 1,000
    payloads = listener.drain(wait=1.0)
    assert len(payloads) == 3 and all(len(p) < 8000 for p in payloads)
    expected = {lead.id for lead in leads}
    assert parse(payloads) == {tenant.id: expected}
    wait_for(lambda: enqueued.ids(tenant.id) == expected, timeout=10)
    assert all(len(lead_ids) <= 1_000 for _, lead_ids in enqueued.calls)


def test_the_relay_enqueues_each_tenants_leads_for_that_tenant(tenant, other_tenant, relays):
    enqueued = Enqueued()
    relay = relays(enqueue=enqueued)
    assert relay.active.wait(10)
    mine, theirs = LeadFactory(tenant=tenant), LeadFactory(tenant=other_tenant)
    # when
    _ingest(mine, "email_reply", "r-1")
    _ingest(theirs, "form_submit", "f-1")
    # then
    wait_for(lambda: enqueued.ids(other_tenant.id) and enqueued.ids(tenant.id), timeout=10)
    assert enqueued.ids(tenant.id) == {mine.id}
    assert enqueued.ids(other_tenant.id) == {theirs.id}


def test_one_relay_listens_and_a_standby_takes_over_when_it_stops(tenant, relays):
    # given two relays (two workers): one holds the lock
    first_calls, second_calls = Enqueued(), Enqueued()
    first = relays(enqueue=first_calls)
    assert first.active.wait(10)
    second = relays(enqueue=second_calls)
    lead = LeadFactory(tenant=tenant)
    # when a hint is sent, only the active relay enqueues it
    _ingest(lead, "sms_inbound", "in-1")
    wait_for(lambda: first_calls.ids(tenant.id) == {lead.id}, timeout=10)
    assert not second.active.is_set() and second_calls.calls == []
    # when the active one stops (its worker goes away), the standby takes over
    first.stop()
    assert second.active.wait(10)
    _ingest(lead, "sms_inbound", "in-2")
    wait_for(lambda: second_calls.ids(tenant.id) == {lead.id}, timeout=10)


def test_a_failing_enqueue_is_logged_and_the_relay_goes_on(tenant, relays, caplog):
    calls = Enqueued()

    def flaky(tenant_id: int, lead_ids: list[int]) -> None:
        if not calls.calls:
            calls(tenant_id, [])
            raise ConnectionError("broker down")
        calls(tenant_id, lead_ids)

    relay = relays(enqueue=flaky)
    assert relay.active.wait(10)
    first, second = LeadFactory.create_batch(2, tenant=tenant)
    _ingest(first, "sms_inbound", "in-1")
    wait_for(lambda: calls.calls, timeout=10)
    _ingest(second, "sms_inbound", "in-2")
    wait_for(lambda: calls.ids(tenant.id) == {second.id}, timeout=10)
    assert "enqueue failed" in caplog.text


def test_a_foreign_payload_is_skipped():
    assert parse(["7:1,2", "not ours", "8:x", "9:"]) == {7: {1, 2}, 9: set()}


def test_relay_holder_pid_names_the_active_relays_backend(relays):
    from churnapp.hints import relay_holder_pid

    assert relay_holder_pid() is None
    relay = relays(enqueue=Enqueued())
    assert relay.active.wait(10)
    assert relay_holder_pid() == relay._db.connection.get_backend_pid()
    relay.stop()
    wait_for(lambda: relay_holder_pid() is None, timeout=10)
