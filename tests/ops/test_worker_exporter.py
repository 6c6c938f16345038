"""A worker on its own machine serves its series itself (WORKER_METRICS_PORT)."""

from __future__ import annotations

import tempfile

import pytest
import requests
from celery import current_app

from config.celery import ping
from config.services import free_port
from tests.churnapp.conftest import wait_for
from tests.ops.conftest import Scrape


@pytest.mark.django_db(transaction=True)
def test_worker_exports_its_own_series(worker_process):
    # given: a worker with its own metrics directory (as on another host) and port
    port = free_port()
    queue = "ops-exporter-test"
    with current_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)
    with tempfile.TemporaryDirectory() as metrics_dir:
        worker = worker_process(
            name="exporter@%h",
            queues=[queue],
            env={
                "WORKER_METRICS_PORT": str(port),
                "WORKER_METRICS_ADDR": "127.0.0.1",
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            },
        )
        # when: it runs two tasks
        for _ in range(2):
            assert ping.apply_async(queue=queue).get(timeout=90) == "pong", worker.output()

        # then: its endpoint counts them
        def scraped():
            try:
                return Scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except requests.ConnectionError:
                return None

        metrics = wait_for(scraped, timeout=30)
        assert metrics.value("churn_celery_tasks_total", task="system.ping", state="SUCCESS") == 2
        # the scrape-time gauges (database, broker) are the web's job, not repeated here
        assert not metrics.has("churn_queue_depth")
        worker.stop()
