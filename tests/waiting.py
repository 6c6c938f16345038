"""Polling for tests that wait on a real worker: a condition, never a wall-clock bound."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 60.0,
    interval: float = 0.05,
    *,
    describe: Callable[[], object] | None = None,
):
    """Poll until predicate() is truthy and return its value; fail the test after
    `timeout`, saying what `describe()` reports (the state that was not reached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    value = predicate()
    if value:
        return value
    detail = f": {describe()}" if describe is not None else ""
    pytest.fail(f"condition not met within {timeout}s{detail}")
