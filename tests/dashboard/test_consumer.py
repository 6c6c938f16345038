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
    assert got[0]["id"] == mine.id and got[0]["kind"] == "tier_changed"
    assert "type" not in got[0]
    assert got[1]["type"] == "alert" and got[1]["alert"]["subject"] == f"for {agent_id}"
    assert other_got[0]["id"] == theirs.id
    assert other_got[1]["alert"]["subject"] == f"for {other_agent_id}"
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
