"""/healthz, /readyz (fails naming the check when Redis is down), heartbeats, the admin page."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from config.heartbeat import (
    BEAT_KEY,
    WORKER_KEY_PREFIX,
    beat_tick_record,
    heartbeat_client,
    live_workers,
    worker_heartbeat_record,
)
from config.services import free_port


@pytest.fixture
def heartbeat_keys():
    client = heartbeat_client()
    client.delete(BEAT_KEY, *client.keys(WORKER_KEY_PREFIX + "*"))
    yield client
    client.delete(BEAT_KEY, *client.keys(WORKER_KEY_PREFIX + "*"))


def test_healthz_answers_without_touching_dependencies(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_with_every_dependency_up(heartbeat_keys):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    for check in ("database", "redis", "broker", "migrations"):
        assert body["checks"][check]["status"] == "ok"
    # no beat and no worker has reported: visible, but the web still serves
    assert body["checks"]["beat"]["status"] == "missing"
    assert body["checks"]["workers"]["status"] == "missing"


@pytest.mark.django_db
def test_readyz_fails_with_503_naming_redis_when_redis_is_down(settings):
    # given: Redis (cache, channel layer, heartbeats) points at a closed port
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    # when
    response = Client().get("/readyz")
    # then
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["details"]["failing"] == ["redis"]
    assert "redis" in error["message"]
    assert error["details"]["checks"]["redis"]["status"] == "fail"
    assert error["details"]["checks"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_readyz_fails_naming_the_broker_when_the_broker_is_down(settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["details"]["failing"] == ["broker"]


def test_heartbeats_show_live_workers_and_the_beat_tick(heartbeat_keys, settings):
    worker_heartbeat_record(name="w1@host", queues=["sms"])
    worker_heartbeat_record(name="w2@host", queues=["email", "scoring"])
    beat_tick_record(at=time.time() - 5)
    workers = live_workers()
    assert {name: w["queues"] for name, w in workers.items()} == {
        "w1@host": ["sms"],
        "w2@host": ["email", "scoring"],
    }
    # a heartbeat key expires: a dead worker disappears by itself
    assert (
        0
        < heartbeat_keys.ttl(WORKER_KEY_PREFIX + "w1@host")
        <= settings.OPS_HEARTBEAT_STALE_SECONDS
    )


@pytest.mark.django_db
def test_readyz_reports_a_stale_beat(heartbeat_keys, settings):
    beat_tick_record(at=time.time() - settings.OPS_HEARTBEAT_STALE_SECONDS - 60)
    worker_heartbeat_record(name="w1@host", queues=["default"])
    checks = Client().get("/readyz").json()["checks"]
    assert checks["beat"]["status"] == "stale"
    assert checks["workers"]["status"] == "ok"
    assert checks["workers"]["live"]["w1@host"]["queues"] == ["default"]


@pytest.mark.django_db
def test_admin_health_page_for_superusers_only(heartbeat_keys, tenant):
    worker_heartbeat_record(name="sms-worker@box", queues=["sms"])
    beat_tick_record()
    user_model = get_user_model()
    admin_user = user_model.objects.create_superuser("root", "root@example.com", "pw")
    staff = user_model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/ops/health/").status_code == 403
    client.force_login(admin_user)
    response = client.get("/admin/ops/health/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "sms-worker@box" in page and "Readiness: ready" in page
    assert "Status: <strong>ok</strong>" in page  # the beat ticked just now
