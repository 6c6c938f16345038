"""The benchmark harness: sizes, statistics and the results table (make bench).

Every benchmark under tests/bench/ (marker ``bench``):
- builds its data with the simulator's bulk generator (or set-based SQL of the same shape);
- warms up, then measures several runs (``measure``);
- measures the raw floor of the same work in the same run;
- records one row per figure with ``results.record(...)``.

``BENCH_SCALE`` scales every benchmark's full size: ``1`` (default) is the size the
benchmark issue names, ``smoke`` is the tiny pass CI runs to prove the suite works (its
figures mean nothing and are written under .data/bench-smoke/, not docs/). The table is
written to ``BENCH_OUT`` (default ``docs/benchmarks``) as results.md and results.json
with the machine's cores, memory, load and versions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every benchmark module: ``pytestmark = BENCH``.
BENCH = [pytest.mark.bench, pytest.mark.timeout(int(os.environ.get("BENCH_TIMEOUT", "5400")))]


def scale() -> float:
    raw = os.environ.get("BENCH_SCALE", "1")
    return 0.0 if raw == "smoke" else float(raw)


def is_smoke() -> bool:
    return scale() == 0.0


def sized(full: int, smoke: int) -> int:
    """``full`` scaled by BENCH_SCALE; ``smoke`` in the smoke pass."""
    s = scale()
    return smoke if s == 0.0 else max(smoke, int(round(full * s)))


def runs(full: int, smoke: int = 1) -> int:
    return smoke if is_smoke() else full


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Stats:
    n: int
    median: float
    p50: float
    p99: float
    min: float
    max: float
    stdev: float

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            p50=percentile(samples, 50),
            p99=percentile(samples, 99),
            min=min(samples),
            max=max(samples),
            stdev=statistics.stdev(samples) if len(samples) > 1 else 0.0,
        )


def analyze_database() -> None:
    """ANALYZE the whole test database, once a benchmark's data is built and before it
    measures. The flush after each benchmark (TRUNCATE) keeps a table's column statistics
    and its row estimate, and ANALYZE of an empty table keeps them too, so without this a
    benchmark is planned with the statistics of the previous one's data: in one `make
    bench`, send ran after the rescore and analytics benchmarks' millions of rows at
    0.71 ms of PostgreSQL CPU per message instead of 0.23-0.26."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def measure(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 5) -> Stats:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeat`` timed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Stats.of(samples)


@dataclass
class Row:
    benchmark: str
    work: str
    size: str
    metric: str  # e.g. "seconds (median)", "p99 ms", "activities/s"
    value: float
    spread: str  # e.g. "min 35.1 / max 46.0" or "p50 10 / p99 18"
    floor: float | None = None  # the raw floor, same unit as value
    floor_work: str = ""
    ratio: float | None = None  # value / floor (or floor / value for throughputs)
    target: str = ""
    met: bool | None = None
    notes: str = ""
    loadavg: list[float] = field(default_factory=list)
    at: str = ""


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("django", "celery", "channels", "psycopg", "numpy", "sklearn", "redis"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional module is just not listed
            pass
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            out["postgresql"] = cursor.fetchone()[0]
    except Exception:  # noqa: BLE001
        pass
    try:
        import redis
        from django.conf import settings

        out["redis_server"] = redis.Redis.from_url(settings.REDIS_URL).info()["redis_version"]
    except Exception:  # noqa: BLE001
        pass
    return out


def _machine() -> dict:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "platform": platform.platform(),
    }


class Results:
    """Rows recorded by the benchmarks of one pytest session, merged into the file.

    Rows are keyed by (benchmark, size, metric): a later run of one benchmark replaces
    its own rows and keeps the others', so benchmarks can be run one at a time."""

    def __init__(self, out: Path):
        self.out = out
        self.rows: list[Row] = []

    def record(self, **kwargs) -> Row:
        row = Row(**kwargs)
        row.loadavg = [round(x, 2) for x in os.getloadavg()]
        row.at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        self.rows.append(row)
        print(
            f"\nBENCH {row.benchmark} [{row.size}] {row.metric}: {row.value:.4g}"
            f" ({row.spread}) floor={row.floor} ratio={row.ratio} target={row.target}"
            f" met={row.met}",
            flush=True,
        )
        return row

    def write(self) -> None:
        if not self.rows:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "results.json"
        old = json.loads(path.read_text()) if path.exists() else {"rows": []}
        keys = {(r.benchmark, r.size, r.metric) for r in self.rows}
        rows = [
            r for r in old.get("rows", []) if (r["benchmark"], r["size"], r["metric"]) not in keys
        ]
        rows += [asdict(r) for r in self.rows]
        data = {
            "machine": _machine(),
            "versions": _versions(),
            "scale": os.environ.get("BENCH_SCALE", "1"),
            "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "rows": rows,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
        (self.out / "results.md").write_text(markdown(data))


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def markdown(data: dict) -> str:
    m, v = data["machine"], data["versions"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (tests/bench/); every figure below was measured in the run",
        "that wrote it, with its raw floor measured in the same run. Load average is the",
        "machine's 1/5/15-minute load when the row was recorded: other work on the machine",
        "slows the figures down.",
        "",
        f"- machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['cpu']}, {m['platform']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- written: {data['written']}, BENCH_SCALE={data['scale']}",
        "",
        "| benchmark | size | metric | value | spread | raw floor | ratio | target | met | load | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        floor = f"{_fmt(r['floor'])} ({r['floor_work']})" if r["floor"] is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
        load = "/".join(f"{x:.1f}" for x in r["loadavg"])
        lines.append(
            f"| {r['benchmark']} | {r['size']} | {r['metric']} | {_fmt(r['value'])} |"
            f" {r['spread']} | {floor} | {ratio} | {r['target']} | {met} | {load} |"
            f" {r['notes']} |"
        )
    return "\n".join(lines) + "\n"
