"""A live daphne serving the project on the test database, as `manage.py up` runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import connection

from config.services import free_port

ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR", settings.BASE_DIR / ".data" / "test-artifacts")
)


def test_database_url() -> str:
    """DATABASE_URL pointing at pytest's test database (same server, socket or TCP)."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


test_database_url.__test__ = False  # a helper, not a test


class LiveServer:
    """daphne serving config.asgi:application on 127.0.0.1, as `manage.py up` runs it."""

    def __init__(self, heartbeat_seconds: float = 1.0, env: dict | None = None):
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.heartbeat_seconds = heartbeat_seconds
        self.process: subprocess.Popen | None = None
        self.log = ARTIFACTS / f"daphne-{self.port}.log"

    def start(self) -> LiveServer:
        # os.environ carries the run's DJANGO_SETTINGS_MODULE (pytest-django sets it):
        # the server shares the test process's hashers, channel layer prefix and queues.
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DJANGO_SERVE_STATIC": "true",
            "TRACKING_WS_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            # Persistent connections, as deployed: with the test settings' 0, every
            # database_sync_to_async call of every socket opened a new connection.
            "DATABASE_CONN_MAX_AGE": "60",
            **self.extra_env,
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "config.asgi:application",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited: see {self.log}")
            try:
                if requests.get(self.url + "/login/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"daphne did not answer in 60s: see {self.log}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
