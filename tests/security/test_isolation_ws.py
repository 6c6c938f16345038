"""Tenants are walls on the WebSocket: every route and every group a consumer joins.
Tenant A's manager, connected over the full ASGI stack (session cookie, origin check),
receives neither B's lifecycle events nor the alerts of B's agents, and a socket cannot
ask to join another group."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from churnapp.factories import AgentFactory
from churnapp.models import Agent
from config.asgi import application
from config.routing import websocket_urlpatterns
from notifications.realtime import agent_group, tenant_group
from tests.security.conftest import manager_user
from tests.tracking.conftest import loop_thread  # noqa: F401  (fixture)
from tracking.events import tracking_event_record

# Every WebSocket route, with the test below that proves its walls.
PROBED_ROUTES = {"ws/tracking/": "test_tracking_socket_receives_nothing_of_another_tenant"}


def test_every_websocket_route_is_probed():
    routes = {str(p.pattern) for p in websocket_urlpatterns}
    assert routes == set(PROBED_ROUTES)


def _connect(loop_thread, user, path="/ws/tracking/"):  # noqa: F811
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    ws = WebsocketCommunicator(
        application,
        path,
        headers=[
            (b"origin", b"http://localhost"),
            (b"host", b"localhost"),
            (b"cookie", cookie.encode()),
        ],
    )
    connected, _ = loop_thread.run(ws.connect())
    assert connected
    return ws


def test_tracking_socket_receives_nothing_of_another_tenant(
    transactional_db,
    settings,
    tenant,
    other_tenant,
    loop_thread,  # noqa: F811
):
    # No heartbeat during the test (on a loaded machine one could fall between the
    # "nothing arrives" checks, and it is not an event).
    settings.TRACKING_WS_HEARTBEAT_SECONDS = 3600
    # given A's manager connected, and an agent of B
    me = manager_user(tenant)
    my_agent = Agent.objects.get(user=me)
    their_agent = AgentFactory(tenant=other_tenant, name="Their Agent")
    ws = _connect(loop_thread, me)
    layer = get_channel_layer()
    try:
        # when the socket asks to join B's groups (only "ping" is understood)
        for group in (tenant_group(other_tenant.pk), agent_group(their_agent.pk)):
            loop_thread.run(ws.send_json_to({"type": "join", "group": group}))
        # and B's lifecycle event, B's agent's alert, and an alert naming A's agent but
        # sent to B's agent's group are published
        tracking_event_record(tenant_id=other_tenant.pk, kind="intervention_started")
        for target, agent_id in ((their_agent.pk, their_agent.pk), (their_agent.pk, my_agent.pk)):
            async_to_sync(layer.group_send)(
                agent_group(target),
                {
                    "type": "tracking.event",
                    "event": "agent_alert",
                    "tenant_id": other_tenant.pk,
                    "agent_id": agent_id,
                    "subject": "theirs",
                    "body": "their alert",
                },
            )
        # then nothing arrives; A's own event does, so the socket was listening
        assert loop_thread.run(ws.receive_nothing(timeout=0.5))
        mine = tracking_event_record(tenant_id=tenant.pk, kind="intervention_started")
        got = loop_thread.run(ws.receive_json_from(timeout=30))
        assert got["id"] == mine.pk
        assert loop_thread.run(ws.receive_nothing(timeout=0.3))
    finally:
        loop_thread.run(ws.disconnect())


def test_foreign_origins_and_unknown_paths_are_refused(transactional_db, tenant, loop_thread):  # noqa: F811
    client = Client()
    client.force_login(manager_user(tenant))
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    def communicator(path: str, origin: bytes) -> WebsocketCommunicator:
        headers = [(b"origin", origin), (b"host", b"localhost"), (b"cookie", cookie.encode())]
        return WebsocketCommunicator(application, path, headers=headers)

    # a page of another site, with the manager's cookie
    connected, _ = loop_thread.run(communicator("/ws/tracking/", b"https://evil.example").connect())
    assert not connected
    # paths no route serves: URLRouter refuses them
    for path in ("/ws/tracking/other/", "/ws/tenant-1/"):
        with pytest.raises(ValueError):
            loop_thread.run(communicator(path, b"http://localhost").connect())
