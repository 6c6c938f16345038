"""Polling for tests that wait on a real worker: a condition, never a wall-clock bound."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 90.0, interval: float = 0.1):
    """Poll until predicate() is truthy and return its value; return the last (falsy)
    value after `timeout`, so the caller's assertion says what was expected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
