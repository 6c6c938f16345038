"""Helpers for the operations tests: scrape /metrics and read samples from it."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics answer, parsed: value(name, **labels) sums the matching samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            for s in self.samples
        )

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


@pytest.fixture
def scrape():
    def get() -> Scrape:
        response = Client().get("/metrics")
        assert response.status_code == 200, response.content[:500]
        assert response["Content-Type"].startswith("text/plain")
        return Scrape(response.content.decode())

    return get


class WorkerProcess:
    """A real `celery -A config worker` subprocess on the test database, given queues."""

    def __init__(self, *, name: str, queues: list[str], env: dict[str, str]) -> None:
        import os
        import sys
        from pathlib import Path

        from django.conf import settings
        from django.db import connection

        self.name = name
        db = connection.settings_dict
        host = db.get("HOST") or "127.0.0.1"
        database_url = f"postgres://{db.get('USER') or 'postgres'}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"
        if host.startswith("/"):
            from urllib.parse import quote

            database_url = (
                f"postgres://{db.get('USER') or 'postgres'}@{quote(host, safe='')}/{db['NAME']}"
            )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url,
            "REDIS_URL": settings.REDIS_URL,
            "OPS_HEARTBEAT_SECONDS": "1",
            **env,
        }
        self.cmd = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "worker",
            "-P",
            "solo",
            "-Q",
            ",".join(queues),
            "-n",
            name,
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        self.proc = None
        self.log = None

    def start(self) -> WorkerProcess:
        import subprocess
        import tempfile

        from django.conf import settings

        self.log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=settings.BASE_DIR, stdout=self.log, stderr=self.log
        )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        import os
        import subprocess

        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)
        self.proc = None


@pytest.fixture
def worker_process():
    """Start worker subprocesses with worker_process(name=..., queues=[...], env={...});
    every one started is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(*, name: str, queues: list[str], env: dict[str, str] | None = None):
        worker = WorkerProcess(name=name, queues=queues, env=env or {}).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
