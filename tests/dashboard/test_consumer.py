"""The /ws/tracking/ consumer over the real Redis channel layer: auth, groups, resync."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from config.asgi import application
from notifications.realtime import agent_group, tenant_group
from tracking.consumers import CLOSE_FORBIDDEN, CLOSE_RESYNC
from tracking.events import tracking_event_record, tracking_event_send_rollback_unsafe
from tracking.models import EventKind, TrackingEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _communicator(cookie: bytes | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/tracking/", headers=headers)


def _record(tenant_id: int, lead_id: int = 1) -> TrackingEvent:
    # Outside a transaction (autocommit) on_commit runs at once: stored, then broadcast.
    return tracking_event_record(tenant_id=tenant_id, kind=EventKind.TIER_CHANGED, lead_id=lead_id)


def test_anonymous_socket_is_refused():
    async def scenario():
        comm = _communicator()
        connected, code = await comm.connect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert connected is False
    assert code == CLOSE_FORBIDDEN


def test_a_user_without_an_agent_row_is_refused():
    user = get_user_model().objects.create_user(username="nobody", password="x")
    cookie = _cookie(user)

    async def scenario():
        comm = _communicator(cookie)
        return await comm.connect()

    connected, code = async_to_sync(scenario)()
    assert connected is False
    assert code == CLOSE_FORBIDDEN


def test_manager_gets_own_tenant_events_and_own_alerts_only(
    manager_user, tenant, other_tenant, other_manager_user
):
    # given: a manager of each tenant connected
    cookie, other_cookie = _cookie(manager_user), _cookie(other_manager_user)
    agent_id = manager_user.agent.pk
    other_agent_id = other_manager_user.agent.pk

    async def scenario():
        comm, other = _communicator(cookie), _communicator(other_cookie)
        assert (await comm.connect())[0] and (await other.connect())[0]
        # when: each tenant records an event, and each manager gets an alert
        mine = await database_sync_to_async(_record)(tenant.id)
        theirs = await database_sync_to_async(_record)(other_tenant.id)
        layer = get_channel_layer()
        for aid in (agent_id, other_agent_id):
            await layer.group_send(
                agent_group(aid),
                {
                    "type": "tracking.event",
                    "event": "agent_alert",
                    "agent_id": aid,
                    "lead_id": 7,
                    "subject": f"for {aid}",
                    "body": "b",
                    "message_id": aid,
                    "created_at": "2026-01-01T00:00:00+00:00",
                },
            )
        got = [await comm.receive_json_from(timeout=5) for _ in range(2)]
        other_got = [await other.receive_json_from(timeout=5) for _ in range(2)]
        silent = await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()
        await other.disconnect()
        return mine, theirs, got, other_got, silent

    mine, theirs, got, other_got, silent = async_to_sync(scenario)()

    # then: each sees its own tenant's event and its own alert, nothing else
    # A lifecycle event travels as the events API returns it; an alert has a "type".
    # The two come from different groups (and the event through this process's
    # publisher thread), so their order on the socket is not a contract.
    def split(frames):
        events = [f for f in frames if "type" not in f]
        alerts = [f for f in frames if f.get("type") == "alert"]
        assert len(events) == 1 and len(alerts) == 1, frames
        return events[0], alerts[0]

    event, alert = split(got)
    assert event["id"] == mine.id and event["kind"] == "tier_changed"
    assert alert["alert"]["subject"] == f"for {agent_id}"
    other_event, other_alert = split(other_got)
    assert other_event["id"] == theirs.id
    assert other_alert["alert"]["subject"] == f"for {other_agent_id}"
    assert silent


def test_heartbeat_carries_the_tenants_latest_event_id(
    manager_user, tenant, other_tenant, settings
):
    settings.TRACKING_WS_HEARTBEAT_SECONDS = 0.2
    earlier = _record(tenant.id)
    _record(other_tenant.id)  # another tenant's later event is not this page's cursor
    cookie = _cookie(manager_user)

    async def scenario():
        comm = _communicator(cookie)
        await comm.connect()
        beat = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return beat

    beat = async_to_sync(scenario)()
    assert beat["type"] == "heartbeat" and beat["last_event_id"] == earlier.id


def test_heartbeats_then_a_dropped_event_forces_a_resync(manager_user, tenant, settings):
    settings.TRACKING_WS_HEARTBEAT_SECONDS = 0.3
    cookie = _cookie(manager_user)

    def record_without_broadcast() -> TrackingEvent:
        # Stored but its broadcast lost, as when the channel layer dropped it for a
        # consumer at capacity.
        return TrackingEvent.objects.create(
            tenant_id=tenant.id, kind=EventKind.TIER_CHANGED, occurred_at="2026-01-01T00:00Z"
        )

    async def scenario():
        comm = _communicator(cookie)
        await comm.connect()
        beat = await comm.receive_json_from(timeout=5)
        delivered = await database_sync_to_async(_record)(tenant.id)
        forwarded = await comm.receive_json_from(timeout=5)
        beat_after = await comm.receive_json_from(timeout=5)
        lost = await database_sync_to_async(record_without_broadcast)()
        seen = []
        while True:
            message = await comm.receive_json_from(timeout=5)
            seen.append(message)
            if message["type"] == "resync":
                break
        closed = await comm.receive_output(timeout=5)
        return beat, delivered, forwarded, beat_after, lost, seen, closed

    beat, delivered, forwarded, beat_after, lost, seen, closed = async_to_sync(scenario)()

    assert beat["type"] == "heartbeat"
    assert forwarded["id"] == delivered.id
    assert beat_after == {**beat_after, "type": "heartbeat", "last_event_id": delivered.id}
    # The lost event is announced by one heartbeat, then missed by the next: resync.
    assert seen[-2]["type"] == "heartbeat" and seen[-2]["last_event_id"] == lost.id
    assert seen[-1]["type"] == "resync" and seen[-1]["last_event_id"] == lost.id
    assert closed == {"type": "websocket.close", "code": CLOSE_RESYNC}


def test_a_full_consumer_does_not_stall_the_group(manager_user, tenant, settings):
    """channels-redis drops messages for a channel at capacity; other members still get
    every event."""
    # A heartbeat is not what this test is about: on a loaded machine the sends outlast
    # the default interval, and one would land among the events.
    settings.TRACKING_WS_HEARTBEAT_SECONDS = 600
    layer = get_channel_layer()
    capacity = layer.capacity
    cookie = _cookie(manager_user)
    send = database_sync_to_async(tracking_event_send_rollback_unsafe)

    async def scenario():
        comm = _communicator(cookie)
        await comm.connect()
        # A stalled member of the same group: a raw channel nobody reads.
        stalled = await layer.new_channel()
        await layer.group_add(tenant_group(tenant.id), stalled)
        try:
            for n in range(capacity + 5):
                await send(tenant_id=tenant.id, payload={"id": n + 1, "kind": "tier_changed"})
            received = [await comm.receive_json_from(timeout=5) for _ in range(capacity + 5)]
        finally:
            await layer.group_discard(tenant_group(tenant.id), stalled)
            await comm.disconnect()
        return received

    received = async_to_sync(scenario)()
    assert [m["id"] for m in received] == list(range(1, capacity + 6))


def test_sockets_of_a_tenant_keep_getting_events_as_others_come_and_go(
    manager_user, tenant, settings
):
    """The tenant's events reach this process once and are handed to each of its sockets
    (tracking.consumers._TenantFanout): a socket leaving must not cut off the others, and
    a socket arriving after all had left must be served again."""
    settings.TRACKING_WS_HEARTBEAT_SECONDS = 600
    cookie = _cookie(manager_user)

    async def scenario():
        first, second = _communicator(cookie), _communicator(cookie)
        assert (await first.connect())[0] and (await second.connect())[0]
        # when an event is committed with both connected
        both = await database_sync_to_async(_record)(tenant.id)
        got_both = [await c.receive_json_from(timeout=5) for c in (first, second)]
        # when the first leaves and another event is committed
        await first.disconnect()
        after_leave = await database_sync_to_async(_record)(tenant.id)
        got_second = await second.receive_json_from(timeout=5)
        # when the last leaves, a new socket comes, and an event is committed
        await second.disconnect()
        third = _communicator(cookie)
        assert (await third.connect())[0]
        after_rejoin = await database_sync_to_async(_record)(tenant.id)
        got_third = await third.receive_json_from(timeout=5)
        silent = await third.receive_nothing(timeout=0.3)
        await third.disconnect()
        return both, got_both, after_leave, got_second, after_rejoin, got_third, silent

    both, got_both, after_leave, got_second, after_rejoin, got_third, silent = async_to_sync(
        scenario
    )()

    # then every socket connected at the time got each event, once
    assert [g["id"] for g in got_both] == [both.id, both.id]
    assert got_second["id"] == after_leave.id
    assert got_third["id"] == after_rejoin.id
    assert silent
