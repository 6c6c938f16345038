"""The running stack for end-to-end benchmarks: daphne serving the API as `manage.py up`
serves it (one process or several on one socket), and real Celery worker processes, all
on the test database and Redis."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import tempfile
import time

import psutil
from django.conf import settings

from config.supervisor import daphne_argv, web_socket
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
    """`processes` daphnes on one socket bound here to a free port (port 0), handed to each
    by fd, as `manage.py up` runs WEB_PROCESSES of them (config.supervisor): each
    connection goes to whichever process accepts it first."""

    def __init__(self, env: dict, processes: int = 1) -> None:
        self.sock = web_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.logs = []
        self.procs: list[subprocess.Popen] = []
        for _ in range(processes):
            log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    daphne_argv(self.sock, "-v", "0"),
                    env=env,
                    cwd=settings.BASE_DIR,
                    stdout=log,
                    stderr=log,
                    pass_fds=(self.sock.fileno(),),
                )
            )

    @property
    def proc(self) -> subprocess.Popen:
        return self.procs[0]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        parts = []
        for proc, log in zip(self.procs, self.logs, strict=True):
            with open(log.name, errors="replace") as handle:
                parts.append(f"--- daphne pid {proc.pid} ---\n{handle.read()}")
        return "\n".join(parts)

    def wait_ready(self, timeout: float = 60.0) -> Daphne:
        """Until every process has served a request: connections made before a process
        listens all go to the others."""
        serving: set[int] = set()

        def all_serve() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"daphne {proc.pid} exited:\n{self.output()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().read() and conn.sock is not None:
                    serving.add(connection_owner(self.pids, conn.sock.getsockname()))
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            return serving >= set(self.pids)

        _await(all_serve, timeout, f"{len(self.procs)} daphne process(es)", self.output)
        return self

    def connections(self) -> dict[int, int]:
        """Established client connections each process holds, by pid."""
        return established(self.pids, self.port)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.sock.close()
        for log in self.logs:
            log.close()
            os.unlink(log.name)


def established(pids: list[int], port: int) -> dict[int, int]:
    """Established connections to local `port` that each of `pids` holds, by pid."""
    return {
        pid: sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )
        for pid in pids
    }


def connection_owner(pids: list[int], client_address: tuple) -> int:
    """Which of `pids` holds the server end of the TCP connection whose client end is
    `client_address` (its getsockname()); 0 when none does (yet)."""
    host, port = client_address[:2]
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.ip == host and conn.raddr.port == port:
                return pid
    return 0


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
        # --nonblocking: py-spy otherwise pauses the process for every sample, 200 times a
        # second (the send benchmark ran at 426 msg/s sampled, 732 not).
        [pyspy, "record", "--nonblocking", "-p", str(pid), "-d", str(int(seconds))]
        + ["-r", "200", "-f", "raw"]
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
