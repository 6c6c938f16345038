"""The dashboard WebSocket: session auth, the user's tenant group only, events forwarded."""

from __future__ import annotations

import json

import pytest
from channels.sessions import InstanceSessionWrapper
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User

from churnapp.factories import AgentFactory
from churnapp.models import AgentRole
from config.asgi import application
from tracking.consumers import _frame_send
from tracking.events import event_payload, tracking_event_record, tracking_events_record
from tracking.models import TrackingEvent


def _communicator(cookie: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/tracking/", headers=headers)


def _session_of(client, tenant) -> str:
    user = User.objects.create_user(f"m-{tenant.slug}", password="x" * 12, is_staff=True)
    AgentFactory(tenant=tenant, user=user, role=AgentRole.MANAGER)
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_a_signed_in_member_receives_only_their_tenants_events(
    transactional_db, client, tenant, other_tenant, loop_thread
):
    # given a manager of the tenant connected over the full ASGI stack
    ws = _communicator(_session_of(client, tenant))
    connected, _ = loop_thread.run(ws.connect())
    assert connected
    try:
        # when events of both tenants are committed
        theirs = tracking_event_record(tenant_id=other_tenant.id, kind="intervention_started")
        mine = tracking_event_record(tenant_id=tenant.id, kind="outcome_recorded", stage=2)
        # then only this tenant's event arrives, as sent
        got = loop_thread.run(ws.receive_json_from(timeout=5))
        assert got["id"] == mine.id and got["kind"] == "outcome_recorded" and got["stage"] == 2
        assert theirs.id != got["id"]
        assert loop_thread.run(ws.receive_nothing(timeout=0.5))
    finally:
        loop_thread.run(ws.disconnect())


@pytest.mark.parametrize("signed_in_without_agent", [False, True])
def test_anonymous_or_tenantless_users_are_refused(
    transactional_db, client, loop_thread, signed_in_without_agent
):
    cookie = None
    if signed_in_without_agent:
        client.force_login(User.objects.create_user("nobody", password="x" * 12))
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    ws = _communicator(cookie)
    connected, code = loop_thread.run(ws.connect())
    assert not connected and code == 4403


def test_the_frame_is_the_events_wire_json_unchanged(transactional_db, client, tenant, loop_thread):
    """The publisher serializes an event once for every socket; what a page receives is
    still exactly event_payload's JSON (the shape the events API and live.js read)."""
    # given a manager connected
    ws = _communicator(_session_of(client, tenant))
    assert loop_thread.run(ws.connect())[0]
    try:
        # when an event with details is committed
        event = tracking_event_record(
            tenant_id=tenant.id, kind="message_sent", stage=1, channel="sms", data={"n": 2}
        )
        # then the frame is its payload's JSON text, as json.dumps writes it
        frame = loop_thread.run(ws.receive_from(timeout=5))
        stored = TrackingEvent.objects.get(pk=event.id)
        assert frame == json.dumps(event_payload(stored))
        assert json.loads(frame)["data"] == {"n": 2}
    finally:
        loop_thread.run(ws.disconnect())


def test_events_committed_together_arrive_as_a_frame_each_in_order(
    transactional_db, client, tenant, loop_thread
):
    """A send chunk's events are published as one group message (tracking.events
    _merged); a page still receives one frame per event, in the order written."""
    ws = _communicator(_session_of(client, tenant))
    assert loop_thread.run(ws.connect())[0]
    try:
        # when three events commit in one statement
        written = tracking_events_record(
            events=[
                {"tenant_id": tenant.id, "kind": "message_sent", "channel": "sms", "data": {"n": n}}
                for n in range(3)
            ]
        )
        # then each is a frame of its own, in order, with its stored payload
        frames = [loop_thread.run(ws.receive_from(timeout=5)) for _ in written]
        stored = TrackingEvent.objects.filter(pk__in=[e.id for e in written]).order_by("id")
        assert frames == [json.dumps(event_payload(e)) for e in stored]
        assert [json.loads(f)["data"]["n"] for f in frames] == [0, 1, 2]
    finally:
        loop_thread.run(ws.disconnect())


def test_frames_skip_the_session_wrapper_which_saves_only_http_responses():
    # AuthMiddlewareStack's session wrapper reads the session on every frame to decide
    # not to save it; the fan-out sends its frames to the ASGI send beneath it
    async def raw_send(message):
        sent.append(message)

    sent: list[dict] = []
    outer = InstanceSessionWrapper({"cookies": {}}, raw_send)
    nested = InstanceSessionWrapper({"cookies": {}, "session": object()}, outer.send)
    assert _frame_send(nested.send) is raw_send
    assert _frame_send(raw_send) is raw_send
    # and what the wrapper would save on is not a frame
    assert "websocket.send" not in InstanceSessionWrapper.save_message_types
