"""Benchmarks: every module here sets ``pytestmark = BENCH`` (the ``bench`` marker and a
long timeout) and records its figures through the ``bench_results`` fixture."""

from __future__ import annotations

import os

import pytest

from tests.bench.harness import ROOT, Results, is_smoke


@pytest.fixture(scope="session")
def bench_results():
    default = ".data/bench-smoke" if is_smoke() else "docs/benchmarks"
    results = Results(ROOT / os.environ.get("BENCH_OUT", default))
    yield results
    results.write()
