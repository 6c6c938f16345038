"""The web process runs requests on WEB_SYNC_THREADS persistent threads
(config.asgi_threads): a real daphne keeps at most that many PostgreSQL connections
however many requests it serves, one after another or at once, and a request that
breaks its connection or transaction does not break the next one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from tests.processes import DaphneProcess

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 3


@pytest.fixture(scope="module")
def server(django_db_setup):
    # One server for the module: every test below asserts on what it leaves behind, so
    # what an earlier test did (failed requests, killed connections) is part of the test.
    daphne = DaphneProcess(
        env={
            "DJANGO_SETTINGS_MODULE": "tests.web.site_settings",
            "WEB_SYNC_THREADS": str(THREADS),
            "DATABASE_CONN_MAX_AGE": "60",  # persistent connections, as deployed
        }
    )
    daphne.start()
    try:
        yield daphne
    finally:
        daphne.close()


def _server_backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'asgi-threads-test'"
        )
        return {pid for (pid,) in cursor.fetchall()}


def _get(server, path: str, **kwargs) -> requests.Response:
    return requests.get(server.url + path, timeout=30, **kwargs)


def _backend(server) -> dict:
    response = _get(server, "/t/backend/")
    assert response.status_code == 200, response.text[:500]
    return response.json()


def test_requests_reuse_a_bounded_set_of_connections(server):
    # given / when: requests one after another, then many at once
    sequential = [_backend(server) for _ in range(5 * THREADS)]
    with ThreadPoolExecutor(max_workers=4 * THREADS) as clients:
        concurrent = list(clients.map(lambda _: _backend(server), range(20 * THREADS)))

    # then: every request ran on one of the pool's threads and its connection
    answers = sequential + concurrent
    assert len({a["thread"] for a in answers}) <= THREADS
    assert len({a["backend"] for a in answers}) <= THREADS
    # and the server holds no more connections than it has threads
    held = _server_backends()
    assert 0 < len(held) <= THREADS
    assert {a["backend"] for a in answers} >= held
    assert not any(a["in_atomic_block"] for a in answers)


@pytest.mark.parametrize(
    "failure", ["/t/broken-transaction/", "/t/leaked-atomic/", "/t/error-in-atomic/"]
)
def test_a_failed_request_does_not_poison_the_next(server, failure):
    # given: every thread has served a request
    for _ in range(THREADS):
        _backend(server)

    # when: each thread serves a request that breaks its transaction
    for _ in range(THREADS):
        _get(server, failure)

    # then: the next requests, on every thread, work outside any transaction
    answers = [_backend(server) for _ in range(3 * THREADS)]
    assert len({a["thread"] for a in answers}) == THREADS
    assert not any(a["in_atomic_block"] for a in answers)
    assert len(_server_backends()) <= THREADS


def test_connections_killed_under_the_server_are_replaced(server):
    # given: the server holds its connections
    for _ in range(2 * THREADS):
        _backend(server)
    killed = _server_backends()
    assert killed

    # when: PostgreSQL drops them (a restart, a failover, an idle timeout)
    with connection.cursor() as cursor:
        for pid in killed:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    # then: the next requests reconnect (health checks) instead of failing
    answers = [_backend(server) for _ in range(3 * THREADS)]
    assert not {a["backend"] for a in answers} & killed
    assert len(_server_backends()) <= THREADS


def test_disconnects_and_streaming_stay_on_the_pool(server):
    # given / when: clients that give up on slow requests, and streamed responses
    for _ in range(2 * THREADS):
        with pytest.raises(requests.Timeout):
            requests.get(server.url + "/t/slow/", timeout=0.2)
    streamed = [_get(server, "/t/stream/") for _ in range(2 * THREADS)]

    # then: the abandoned views finish, and everything ran on the pool's connections
    answers = [_backend(server) for _ in range(3 * THREADS)]
    assert all(r.status_code == 200 for r in streamed)
    stream_rows = [line.split(",") for r in streamed for line in r.text.splitlines()]
    assert len(stream_rows) == 3 * len(streamed)
    threads = {a["thread"] for a in answers} | {int(t) for _, t in stream_rows}
    assert len(threads) <= THREADS
    assert len(_server_backends()) <= THREADS
    assert server.alive
