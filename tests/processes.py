"""Real processes for tests: Celery workers and beat, daphne, and a Redis server of the
test's own, each on the test database, each stoppable (SIGTERM) or killable (SIGKILL)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection

from config.services import free_port


def test_database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test_... database)."""
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):  # a Unix socket directory
        return f"postgres://{user}@{quote(host, safe='')}/{db['NAME']}"
    return f"postgres://{user}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


class ManagedProcess:
    """One subprocess with its output in a temporary log file; restartable."""

    name = "process"

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = None
        # restart_on_exit(): a process that exits on its own is started again, as the
        # deployment's restart policy does (docker-compose: restart: unless-stopped).
        self.restarts = 0
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()

    def restart_on_exit(self, check_every: float = 0.5):
        """Start this process again whenever it exits without stop(), kill() or close()
        asking it to; `restarts` counts how often."""
        self._watching.set()

        def watch() -> None:
            while self._watching.is_set():
                proc = self.proc
                if proc is not None and proc.poll() is not None and self._watching.is_set():
                    self.restarts += 1
                    self.start()
                time.sleep(check_every)

        self._watcher = threading.Thread(target=watch, name=f"{self.name}-restarts", daemon=True)
        self._watcher.start()
        return self

    def start(self):
        if self.log is None:
            self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept until close()
                prefix=f"{self.name}-", suffix=".log", delete=False
            )
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=settings.BASE_DIR,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        if self.log is None:
            return ""
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def _unwatch(self) -> None:
        self._watching.clear()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
            self._watcher = None

    def kill(self) -> None:
        """SIGKILL the process group (a prefork pool's children too): no cleanup at all."""
        self._unwatch()
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a graceful stop), then SIGKILL after `timeout`."""
        self._unwatch()
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self):
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        self._drop_log()

    def _drop_log(self) -> None:
        if self.log is not None:
            self.log.close()
            os.unlink(self.log.name)
            self.log = None


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a project process on the test database and the test's Redis."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "OPS_HEARTBEAT_SECONDS": "1",
        **extra,
    }


class WorkerProcess(ManagedProcess):
    """A real `celery -A config worker` on the given queues (solo pool unless told)."""

    name = "worker"

    def __init__(
        self,
        *,
        name: str,
        queues: list[str],
        env: dict[str, str],
        pool: str = "solo",
        concurrency: int = 1,
    ) -> None:
        self.worker_name = name
        cmd = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            ",".join(queues),
            "-n",
            name,
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        super().__init__(cmd, process_env(**env))


class BeatProcess(ManagedProcess):
    """A real `celery -A config beat` (the project's DatabaseScheduler)."""

    name = "beat"

    def __init__(self, *, env: dict[str, str]) -> None:
        self.schedule_dir = tempfile.mkdtemp(prefix="beat-")
        cmd = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "beat",
            "-l",
            "WARNING",
            "-s",
            os.path.join(self.schedule_dir, "schedule"),
            "--pidfile=",
        ]
        super().__init__(cmd, process_env(**env))

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.schedule_dir, ignore_errors=True)


class DaphneProcess(ManagedProcess):
    """daphne serving config.asgi:application on 127.0.0.1 and a free port."""

    name = "daphne"

    def __init__(self, *, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "config.asgi:application",
        ]
        full_env = process_env(**env)
        full_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        super().__init__(cmd, full_env)

    def start(self, timeout: float = 60):
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"daphne exited:\n{self.output()}")
            try:
                requests.get(self.url + "/healthz", timeout=2)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not answer within {timeout}s:\n{self.output()}")


class RedisServer(ManagedProcess):
    """A redis-server of the test's own, without persistence: a restart loses everything
    in it (queued tasks, unacked tasks, locks), as a crashed Redis does."""

    name = "redis"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="redis-")
        binary = shutil.which("redis-server") or "redis-server"
        cmd = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
        ]
        super().__init__(cmd, dict(os.environ))

    def start(self, timeout: float = 20):
        import redis

        super().start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if not self.alive:
                        raise RuntimeError(f"redis-server exited:\n{self.output()}") from None
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer within {timeout}s")

    def close(self) -> None:
        self.kill()
        self._drop_log()
        shutil.rmtree(self.dir, ignore_errors=True)
