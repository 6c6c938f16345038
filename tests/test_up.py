"""`manage.py up` for real: embedded servers, daphne, worker and beat, reused data, clean stops."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
from celery import Celery
from django.conf import settings

from config.services import free_port

# Generous: a cold first run does initdb and every migration on a shared 2-core box.
DEADLINE_SECONDS = 300


@pytest.fixture
def server_dir():
    """A data dir for embedded servers outside pytest's tmp_path: a concurrent pytest
    session chmods /tmp/pytest-of-<user> to 0700, which would lock out the PostgreSQL
    server's own system user mid-test."""
    path = Path(tempfile.mkdtemp(prefix="churn-test-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _up(data_dir: Path, port: int, log_path: Path, **extra_env: str) -> subprocess.Popen:
    env = {
        key: value
        for key, value in os.environ.items()
        # No server addresses: `up` must start its embedded PostgreSQL and Redis.
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", CHURN_DATA_DIR=str(data_dir))
    env.pop("WEB_PROCESSES", None)
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port), "--stop-timeout", "60"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )


def _wait_until_ok(proc: subprocess.Popen, log_path: Path, urls: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    pending = list(urls)
    while pending:
        if proc.poll() is not None:
            pytest.fail(f"up exited with {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no 200 from {pending} in time:\n{log_path.read_text()}")
        try:
            if requests.get(pending[0], timeout=10).status_code == 200:
                pending.pop(0)
                continue
        except requests.RequestException:  # not listening yet, or slow on a busy box
            pass
        time.sleep(0.5)


def _descendants(proc: subprocess.Popen, daphnes: int = 1) -> dict[str, list[psutil.Process]]:
    """The up process's children by role, once all have started (`daphnes` web ones)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found: dict[str, list[psutil.Process]] = {}
        for child in psutil.Process(proc.pid).children(recursive=True):
            with_args = " ".join(child.cmdline())
            for role, marker in (
                ("daphne", "-m daphne"),
                ("worker", "celery -A config worker"),
                ("beat", "celery -A config beat"),
            ):
                if marker in with_args:
                    found.setdefault(role, []).append(child)
        started = len(found) == 3 and len(found["daphne"]) == daphnes
        if started or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _all_gone(processes) -> bool:
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=DEADLINE_SECONDS)


def _admin_login(base: str, username: str, password: str) -> requests.Response:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=10)
    return session.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/admin/login/"},
        timeout=30,
    )


@pytest.mark.timeout(900)
def test_up_runs_the_stack_stops_cleanly_and_reuses_its_data(tmp_path, server_dir):
    data_dir = server_dir / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    # --- first run: a fresh data dir, two web processes on one socket ----------------
    log1 = tmp_path / "up1.log"
    proc = _up(data_dir, port, log1, WEB_PROCESSES="2")
    try:
        _wait_until_ok(proc, log1, [f"{base}/admin/login/", f"{base}/api/schema/"])
        children = _descendants(proc, daphnes=2)
        assert set(children) == {"daphne", "worker", "beat"}, log1.read_text()
        assert len(children["daphne"]) == 2, log1.read_text()

        # a second `up` on the same data dir refuses to start beside the first
        second = _up(data_dir, free_port(), tmp_path / "up-second.log")
        assert second.wait(timeout=DEADLINE_SECONDS) == 1
        assert "already running" in (tmp_path / "up-second.log").read_text()
        every_process = psutil.Process(proc.pid).children(recursive=True)

        # static files come from daphne itself (admin CSS, Swagger UI from the sidecar)
        css = requests.get(f"{base}/static/admin/css/base.css", timeout=10)
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")
        swagger = requests.get(
            f"{base}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
            timeout=10,
        )
        assert swagger.status_code == 200
        assert requests.get(f"{base}/api/docs/", timeout=10).status_code == 200
        root = requests.get(f"{base}/", timeout=10, allow_redirects=False)
        assert root.status_code in (200, 301, 302)

        # other commands find the running servers through services.env
        services_env = (data_dir / "services.env").read_text()
        broker = re.search(r"^REDIS_URL=(.+)$", services_env, re.M).group(1)
        assert "DATABASE_URL=" in services_env

        # the worker `up` started answers the health-check task through its broker
        client = Celery(broker=broker, backend=broker)
        try:
            assert client.send_task("system.ping", queue="default").get(timeout=120) == "pong"
        finally:
            client.close()

        first_log = log1.read_text()
        assert 'Created demo tenant "demo"' in first_log
        assert "2 daphne processes on one socket (WEB_PROCESSES)" in first_log
        manager_password = re.search(r"manager\s+password: (\S+)", first_log).group(1)
        assert re.search(r"admin\s+password: \S+", first_log)
        assert re.search(r"demo API key:\s+pcp_\S+", first_log)
    finally:
        returncode = _stop(proc)

    assert returncode == 0, log1.read_text()
    assert _all_gone(every_process), log1.read_text()
    assert not (data_dir / "services.env").exists()

    # --- second run: same data dir, nothing recreated -------------------------------
    log2 = tmp_path / "up2.log"
    proc = _up(data_dir, port, log2)
    try:
        _wait_until_ok(proc, log2, [f"{base}/admin/login/"])
        children = _descendants(proc)
        every_process = psutil.Process(proc.pid).children(recursive=True)
        second_log = log2.read_text()
        assert "already exist" in second_log
        assert "password:" not in second_log
        assert "pcp_" not in second_log

        # the manager made by the first run logs in: the database was kept
        response = _admin_login(base, "manager", manager_password)
        assert response.status_code == 200
        assert response.url.rstrip("/").endswith("/admin")

        # one web process by default
        assert len(children["daphne"]) == 1, second_log

        # a child dying on its own takes the whole stack down with a non-zero exit
        children["worker"][0].kill()
        returncode = proc.wait(timeout=DEADLINE_SECONDS)
    finally:
        if proc.poll() is None:
            _stop(proc)

    output = log2.read_text()
    assert returncode == 1, output
    assert "celery worker" in output and "exited unexpectedly" in output
    assert _all_gone(every_process), output
