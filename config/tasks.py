"""Ops tasks: the heartbeat beat schedules, proving beat -> broker -> worker end to end."""

from __future__ import annotations

import time

from celery import shared_task


@shared_task(name="ops.heartbeat", queue="default", ignore_result=True)
def heartbeat() -> float:
    from config.heartbeat import TASK_KEY, heartbeat_client

    now = time.time()
    heartbeat_client().set(TASK_KEY, repr(now))
    return now
