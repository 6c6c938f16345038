"""The running stack for end-to-end benchmarks: daphne serving the API as `manage.py up`
serves it, and real Celery worker processes, all on the test database and Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from django.conf import settings

from tests.ops.conftest import WorkerProcess

# What the benchmarked processes take from a deployment's environment rather than the
# test settings: persistent database connections, the default heartbeat, quiet logs.
DEPLOYED = {"DATABASE_CONN_MAX_AGE": "60", "OPS_HEARTBEAT_SECONDS": "15", "LOG_LEVEL": "WARNING"}


def _await(predicate, timeout: float, what: str, logs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s:\n{logs()}")


class BenchWorker(WorkerProcess):
    """`celery -A config worker` as `manage.py up` starts it (prefork pool), on the queues
    given; `env` overrides settings the way a deployment's environment would."""

    def __init__(
        self, *, name: str, queues: list[str], env: dict, concurrency: int = 2, pool: str = ""
    ):
        super().__init__(name=name, queues=queues, env={**DEPLOYED, **env})
        celery = self.cmd[0]
        self.cmd = [celery, "-A", "config", "worker", "-Q", ",".join(queues)]
        self.cmd += ["-P", pool] if pool else ["-c", str(concurrency)]
        self.cmd += ["-n", name, "-l", "WARNING", "--without-gossip", "--without-mingle"]

    def wait_ready(self, timeout: float = 60.0) -> BenchWorker:
        from config.celery import app

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.worker_name} exited:\n{self.output()}")
            return bool(app.control.ping(destination=[self.worker_name], timeout=0.5))

        _await(answers, timeout, f"worker {self.worker_name}", self.output)
        return self


class Daphne:
    """daphne on a socket bound here to a free port (port 0), handed over by fd."""

    def __init__(self, env: dict) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.set_inheritable(True)
        self.port = self.sock.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "--fd", str(fd), "-v", "0"]
            + ["config.asgi:application"],
            env=env,
            cwd=settings.BASE_DIR,
            stdout=self.log,
            stderr=self.log,
            pass_fds=(fd,),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def wait_ready(self, timeout: float = 60.0) -> Daphne:
        import requests

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.output()}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code < 500
            except requests.RequestException:
                return False

        _await(answers, timeout, "daphne", self.output)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.sock.close()
        self.log.close()
        os.unlink(self.log.name)


def purge_queues() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        for queue in settings.CELERY_QUEUE_NAMES:
            conn.default_channel.queue_purge(queue)


def pyspy_record(
    pid: int, name: str, seconds: float, *, subprocesses: bool = False, idle: bool = False
) -> subprocess.Popen | None:
    """With BENCH_PYSPY=<path to py-spy>, sample process `pid` for `seconds` into
    .data/bench-profiles/<name>.raw (collapsed stacks, for flame graphs); else nothing.
    `subprocesses` samples its children too (a prefork pool), `idle` keeps idle time
    (waits on PostgreSQL and Redis)."""
    pyspy = os.environ.get("BENCH_PYSPY")
    if not pyspy:
        return None
    out = os.path.join(settings.BASE_DIR, ".data", "bench-profiles")
    os.makedirs(out, exist_ok=True)
    return subprocess.Popen(
        [pyspy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw"]
        + ["--subprocesses"] * subprocesses
        + ["--idle"] * idle
        + ["-o", os.path.join(out, f"{name}.raw")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pyspy_stop(profile: subprocess.Popen | None, timeout: float = 60) -> None:
    """End a pyspy_record sample now (py-spy writes its file on SIGINT), for work whose
    length is not known in advance: waiting out a generous duration overran the wait."""
    if profile is None:
        return
    if profile.poll() is None:
        profile.send_signal(signal.SIGINT)
    profile.wait(timeout=timeout)
