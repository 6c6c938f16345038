"""The browser tests' machinery: Debian's Chromium through Playwright, a live daphne."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings
from django.db import connection

from config.services import free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "install it with `sudo apt-get update && sudo apt-get install -y chromium` "
    "(.ci/run does this in CI); the Playwright Python package drives it, no browser download"
)
ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR", settings.BASE_DIR / ".data" / "test-artifacts")
)


def require_browser() -> None:
    """Skip on a developer's machine without Chromium; fail under CI, never skip."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium is not installed at {CHROMIUM}: {INSTALL_HINT}"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing: run `make install`"
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run under CI: {problem}", pytrace=False)
    pytest.skip(problem)


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
        self.heartbeat_seconds = heartbeat_seconds
        self.process: subprocess.Popen | None = None
        self.log = ARTIFACTS / f"daphne-{self.port}.log"

    def start(self) -> None:
        # os.environ carries the run's DJANGO_SETTINGS_MODULE (pytest-django sets it):
        # the server shares the test process's hashers, channel layer prefix and queues.
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DJANGO_SERVE_STATIC": "true",
            "TRACKING_WS_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
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
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"daphne did not answer in 60s: see {self.log}")

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


@contextmanager
def chromium():
    """Playwright driving /usr/bin/chromium; yields a function making a fresh profile each."""
    from playwright.sync_api import sync_playwright

    profiles: list[str] = []
    contexts = []
    with sync_playwright() as pw:

        def new_context():
            profile = tempfile.mkdtemp(prefix="chromium-profile-")
            profiles.append(profile)
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            context.set_default_timeout(30_000)
            contexts.append(context)
            return context

        try:
            yield new_context
        finally:
            for context in contexts:
                context.close()
            for profile in profiles:
                shutil.rmtree(profile, ignore_errors=True)
