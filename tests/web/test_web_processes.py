"""Two daphnes on one socket (`python -m config.supervisor web`, WEB_PROCESSES=2), for
real: each process serves HTTP and WebSockets, a socket on either gets its own tenant's
lifecycle events once and no other tenant's, and a daphne that dies takes the tier down
(non-zero exit, so a container's restart policy starts it again)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from config.services import free_port
from notifications.realtime import tenant_group
from tests.bench.stack import connection_owner, established
from tests.live import test_database_url
from tests.load.driver import WsClients
from tests.load.scenario import dashboard_sessions
from tests.waiting import wait_for
from tracking.events import tracking_event_record
from tracking.models import EventKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


class WebTier:
    """`python -m config.supervisor web` on a free port, on the test database."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="web-tier-", suffix=".log")  # noqa: SIM115
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DATABASE_CONN_MAX_AGE": "60",
            "DJANGO_SERVE_STATIC": "true",
            "WEB_PROCESSES": str(processes),
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.supervisor", "web"]
            + ["--host", "127.0.0.1", "--port", str(self.port), "--stop-timeout", "30"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def daphnes(self) -> list[psutil.Process]:
        def started():
            if self.proc.poll() is not None:
                pytest.fail(f"the web tier exited with {self.proc.returncode}:\n{self.output()}")
            found = [
                child
                for child in psutil.Process(self.proc.pid).children()
                if "daphne" in child.cmdline()
            ]
            return found if len(found) == self.processes else None

        return wait_for(started, describe=self.output)

    def stop(self) -> int:
        """SIGTERM, as a container stop sends it; whatever is left is killed after."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def only(serving: psutil.Process, daphnes: list[psutil.Process]):
    """Every other daphne stopped (SIGSTOP), so `serving` alone accepts connections."""
    others = [d for d in daphnes if d.pid != serving.pid]
    for other in others:
        other.suspend()
    try:
        wait_for(lambda: all(o.status() == psutil.STATUS_STOPPED for o in others))
        yield
    finally:
        for other in others:
            other.resume()


def _healthz_served_by(tier: WebTier, pids: list[int]) -> int:
    """GET /healthz: the pid of the daphne that answered (it holds the server end of the
    connection, still open)."""

    def answered() -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", tier.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            return connection_owner(pids, conn.sock.getsockname()) or None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    return wait_for(answered, describe=tier.output)


def _group_subscribers(*tenants, expect: int) -> list[int] | None:
    """Redis subscribers of each tenant's group channel, once all are at `expect`."""

    async def group_channels() -> list[str]:  # the layer is per event loop
        layer = get_channel_layer()
        return [layer._get_group_channel_name(tenant_group(t.id)) for t in tenants]

    names = async_to_sync(group_channels)()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        counts = [count for _, count in client.pubsub_numsub(*names)]
    finally:
        client.close()
    return counts if all(c >= expect for c in counts) else None


def _commit_events(tenant_id: int, count: int) -> set[int]:
    ids = set()
    for _ in range(count):
        with transaction.atomic():
            event = tracking_event_record(
                tenant_id=tenant_id, kind=EventKind.TIER_CHANGED, lead_id=1
            )
        ids.add(event.id)
    return ids


def test_two_daphnes_on_one_socket_both_serve_their_tenants_sockets(tenant, other_tenant):
    # given: the web tier with two daphnes, and four signed-in dashboard users per
    # daphne (two of each tenant)
    cookies = {
        t.id: dashboard_sessions(tenant=t, count=4, prefix="webprocs")
        for t in (tenant, other_tenant)
    }
    tier = WebTier(processes=2)
    fleets: list[WsClients] = []
    try:
        daphnes = tier.daphnes()
        pids = [d.pid for d in daphnes]

        # when: each daphne alone takes an HTTP request and connects its own fleet
        for k, daphne in enumerate(daphnes):
            with only(daphne, daphnes):
                assert _healthz_served_by(tier, pids) == daphne.pid
                clients = [(t, c) for t, cs in cookies.items() for c in cs[2 * k : 2 * k + 2]]
                fleet = WsClients(ws_url=f"ws://127.0.0.1:{tier.port}", clients=clients)
                fleets.append(fleet)
                assert fleet.start() == 4, fleet.first_error
        held = established(pids, tier.port)
        # and, once each daphne's fan-out has joined both tenants' groups (a socket is
        # accepted just before), events of both tenants are committed
        subscribers = wait_for(
            lambda: _group_subscribers(tenant, other_tenant, expect=2), describe=tier.output
        )
        expected = {t.id: _commit_events(t.id, 3) for t in (tenant, other_tenant)}

        # then: each daphne holds its fleet's four sockets, and listens to each tenant's
        # group once (one Redis subscription per process, not per socket)
        assert held == {pid: 4 for pid in pids}, held
        assert subscribers == [2, 2]
        # and every socket, on either daphne, got each of its tenant's events once and
        # none of the other tenant's
        for fleet in fleets:
            deliveries = fleet.stop(expected)
            assert deliveries.errors() == [], deliveries.error_summary()
            assert deliveries.missing() == 0
            assert deliveries.foreign() == 0
            assert deliveries.duplicates() == 0
    finally:
        for fleet in fleets:
            fleet.kill()
        returncode = tier.stop()
    # and SIGTERM stops the tier cleanly
    assert returncode == 0, tier.output()


def test_a_daphne_that_dies_takes_the_web_tier_down():
    # given: the web tier with two daphnes, serving
    tier = WebTier(processes=2)
    try:
        daphnes = tier.daphnes()
        _healthz_served_by(tier, [d.pid for d in daphnes])

        # when: one daphne is killed
        daphnes[0].kill()

        # then: the tier stops the other and exits non-zero, for its restart policy
        returncode = tier.proc.wait(timeout=60)
        output = tier.output()
        assert returncode == 1, output
        assert "exited unexpectedly" in output
        assert not daphnes[1].is_running() or daphnes[1].status() == psutil.STATUS_ZOMBIE
    finally:
        tier.stop()


def test_web_processes_must_be_a_positive_whole_number():
    # given / when: the tier started with WEB_PROCESSES=0
    tier = WebTier(processes=0)
    try:
        returncode = tier.proc.wait(timeout=60)
        output = tier.output()
    finally:
        tier.stop()

    # then: it refuses to start, saying why
    assert returncode == 1
    assert "WEB_PROCESSES must be at least 1" in output
