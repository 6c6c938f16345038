"""The browser tests' machinery: Debian's Chromium through Playwright (the live daphne is
tests.live.LiveServer)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.live import ARTIFACTS, LiveServer, test_database_url

__all__ = ["ARTIFACTS", "LiveServer", "chromium", "require_browser", "test_database_url"]

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
