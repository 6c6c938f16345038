"""Helpers for the operations tests: scrape /metrics and read samples from it."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import WorkerProcess


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
        worker.close()
