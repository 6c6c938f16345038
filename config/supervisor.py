"""`manage.py up`: the whole stack (servers, web, worker, beat) in one foreground process.

The supervisor starts embedded PostgreSQL and Redis when DATABASE_URL / REDIS_URL are
unset (data kept in the data dir), prepares the database (migrate, demo tenant and
users), then runs daphne, one Celery worker on every queue and one beat as child
processes. The web tier is WEB_PROCESSES daphne processes (default 1) sharing one
listening socket that the supervisor binds and hands to each by fd, so the kernel
spreads connections over them. Ctrl-C or SIGTERM stops them all (terminate, wait,
kill after a timeout) and then the embedded servers; a child that dies on its own
stops the rest and the supervisor exits non-zero.

`python -m config.supervisor web` runs the web tier alone (the WEB_PROCESSES daphnes on
one socket), as a container's command: a daphne that exits stops the others and the
command exits non-zero, so the container's restart policy starts the tier again.

The supervisor never touches the database itself: its own Django settings were read
before the servers existed, so every Django step runs as a child with the right
environment.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from config.services import EmbeddedServices

SERVICES_ENV = "services.env"
WEB_PROCESSES_VAR = "WEB_PROCESSES"
# The listening socket's accept queue: connections that arrive while the daphnes start
# (or all are busy) wait here instead of being refused. The kernel caps it at somaxconn.
WEB_BACKLOG = 1024
LOCK_FILE = "up.lock"
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL")
EMBEDDED_MARKER = "# embedded:"


class UpError(Exception):
    """A reason `up` cannot start or go on, worded for the person at the terminal."""


def web_processes_setting() -> int:
    """WEB_PROCESSES: how many daphne processes serve the one web socket (default 1).
    Read from the environment, not Django settings: `python -m config.supervisor web`
    runs without them."""
    raw = os.environ.get(WEB_PROCESSES_VAR, "").strip()
    try:
        count = int(raw or "1")
    except ValueError:
        raise UpError(f"{WEB_PROCESSES_VAR} must be a whole number, not {raw!r}") from None
    if count < 1:
        raise UpError(f"{WEB_PROCESSES_VAR} must be at least 1, not {count}")
    return count


def web_socket(host: str, port: int) -> socket.socket:
    """The web tier's listening socket, bound here for every daphne to inherit by fd.

    One socket, so one port whatever the number of processes: each connection goes to
    whichever daphne accepts it first (all of them wait on the same accept queue).
    Bound as daphne (Twisted) binds: connections of an earlier run in TIME_WAIT do not
    block the port, a live listener does. Raises UpError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(WEB_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UpError(
            f"cannot listen on {host}:{port} ({exc.strerror}); "
            "is something else running there? Pass --port to choose another."
        ) from None
    return sock


def daphne_argv(sock: socket.socket, *options: str) -> list[str]:
    """daphne serving config.asgi:application on `sock`, which the child inherits by fd
    (Popen's pass_fds); `options` are more of daphne's own. IPv4 only: daphne adopts an
    inherited socket as IPv4."""
    if sock.family != socket.AF_INET:
        raise UpError("the web socket must be IPv4 (daphne adopts an inherited socket as IPv4)")
    return [sys.executable, "-m", "daphne", "--fd", str(sock.fileno()), *options] + [
        "config.asgi:application"
    ]


def default_data_dir() -> Path:
    from django.conf import settings

    return Path(settings.DATA_DIR)


def _lock_url(env: dict[str, str]) -> str:
    """Where the beat lock lives: the broker when it is Redis, else REDIS_URL (RabbitMQ)."""
    broker = env.get("CELERY_BROKER_URL") or env["REDIS_URL"]
    return broker if broker.startswith(("redis", "unix")) else env["REDIS_URL"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # A supervisor killed with SIGKILL leaves no orphans: the kernel sends the child
    # SIGTERM when its parent dies (Linux).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    optional: bool = False  # its exit is reported, and the stack keeps running
    pass_fds: tuple[int, ...] = ()  # inherited descriptors (the web socket)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0


@dataclass
class Supervisor:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None  # None: default_data_dir()
    concurrency: int = 2
    # daphne processes on the one web socket; 0: WEB_PROCESSES from the environment.
    web_processes: int = 0
    stop_timeout: float = 20.0
    out: TextIO = sys.stdout
    # The demo's living world (simulator's simulate_live): off with --no-sim or CHURN_DEMO_SIM=0.
    demo_sim: bool = True
    children: list[Child] = field(default_factory=list)
    _stop_signal: int = 0
    _forced: bool = False
    _announced: bool = False
    _web_socket: socket.socket | None = None
    command: str = "up"  # names this process in what it prints

    # --- entry point ------------------------------------------------------------------
    def run(self) -> int:
        self.data_dir = Path(self.data_dir or default_data_dir()).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock_data_dir()
        if lock is None:
            return 1
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        servers = EmbeddedServices(self.data_dir)
        try:
            self._forget_foreign_services_env()
            self.web_processes = self.web_processes or web_processes_setting()
            self._bind_web()
            env = self._start_servers(servers)
            if self._stop_signal:
                return 0
            self._write_services_env(env, embedded=list(servers.env))
            for argv in self._prepare_steps():
                if not self._run_step(argv, env):
                    return 0 if self._stop_signal else 1
            self._start_children(env)
            if not self._wait_until_serving():
                return self._exit_code()
            self._banner()
            return self._supervise(servers)
        except UpError as exc:
            self._say(f"up: {exc}")
            return 1
        finally:
            self._announce_stop()
            self._stop_children()
            servers.stop()
            if self._web_socket is not None:
                self._web_socket.close()
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / SERVICES_ENV).unlink()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.close()

    def run_web(self) -> int:
        """Only the web tier: WEB_PROCESSES daphnes on one socket, in the foreground,
        with the environment as given; a daphne that exits on its own stops the rest
        (exit 1), as in `run`."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        self.command = "web"
        try:
            self.web_processes = self.web_processes or web_processes_setting()
            self._bind_web()
            self._start(self._web_children(), dict(os.environ))
            while not self._stop_signal:
                if self._first_dead_child():
                    return 1
                time.sleep(0.25)
            return 0
        except UpError as exc:
            self._say(f"web: {exc}")
            return 1
        finally:
            self._announce_stop()
            self._stop_children()
            if self._web_socket is not None:
                self._web_socket.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # --- signals ----------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        # Only flags here: printing from a handler can hit the buffered stream mid-write.
        if self._stop_signal:
            self._forced = True  # a second Ctrl-C: stop waiting for graceful exits
        else:
            self._stop_signal = signum

    def _announce_stop(self) -> None:
        if self._stop_signal and not self._announced:
            self._announced = True
            self._say(
                f"\n{self.command}: {signal.Signals(self._stop_signal).name} received, stopping..."
            )

    def _exit_code(self) -> int:
        return 0 if self._stop_signal else 1

    # --- preparation ------------------------------------------------------------------
    def _lock_data_dir(self):
        handle = open(self.data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            handle.close()
            self._say(
                f"up: another `manage.py up` ({holder}) is already running with data dir "
                f"{self.data_dir}; stop it first or pass --data-dir."
            )
            return None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return handle

    def _forget_foreign_services_env(self) -> None:
        """Undo what the settings read from a services.env that is not a live one of ours.

        Our data dir's file was left by a killed `up` (we hold its lock now): its servers
        are gone. The default data dir's file, when we run on another one, belongs to a
        different `up`. Either way its embedded addresses must not be taken for
        variables the user set.
        """
        from django.conf import settings

        ours = self.data_dir / SERVICES_ENV
        for path in {ours, Path(settings.DATA_DIR).resolve() / SERVICES_ENV}:
            if not path.exists():
                continue
            values: dict[str, str] = {}
            embedded: list[str] = []
            for line in path.read_text().splitlines():
                if line.startswith(EMBEDDED_MARKER):
                    embedded = line.removeprefix(EMBEDDED_MARKER).split()
                elif "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    values[key.strip()] = value.strip()
            for key in embedded:
                if key in values and os.environ.get(key) == values[key]:
                    del os.environ[key]
            if path == ours:
                path.unlink()

    def _bind_web(self) -> None:
        """Bind the web socket before anything starts (a taken port fails at once).

        IPv6: daphne binds it itself, as one process (it adopts an inherited socket as
        IPv4 only, and would see every client address wrong)."""
        if ":" in self.host:
            if self.web_processes > 1:
                raise UpError(
                    f"{WEB_PROCESSES_VAR}={self.web_processes} needs an IPv4 --host: daphne "
                    "adopts an inherited socket as IPv4 only."
                )
            self._check_port_free()
            return
        self._web_socket = web_socket(self.host, self.port)

    def _check_port_free(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as sock:
            # As daphne (Twisted) binds: connections of an earlier run in TIME_WAIT do
            # not block the port, a live listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                raise UpError(
                    f"cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                    "is something else running there? Pass --port to choose another."
                ) from None

    def _start_servers(self, servers: EmbeddedServices) -> dict[str, str]:
        try:
            servers.start()
        except Exception as exc:
            raise UpError(
                f"could not start the embedded servers in {self.data_dir}: {exc!r} "
                "(server logs: postgres/pgdata/log, redis/redis.log)"
            ) from exc
        env = {**os.environ, **servers.env}
        env["CHURN_DATA_DIR"] = str(self.data_dir)
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
        env["PYTHONUNBUFFERED"] = "1"
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            # web, worker and beat write their series here; /metrics sums them. Emptied
            # at each start: files of processes from an earlier run would count twice.
            metrics_dir = self.data_dir / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        for var in SERVICE_VARS:
            if var not in servers.env:
                self._say(f"using {var} from the environment")
        return env

    def _write_services_env(self, env: dict[str, str], *, embedded: list[str]) -> None:
        lines = [
            f"# Written by `manage.py up` (pid {os.getpid()}) while it runs; removed on exit.",
            f"{EMBEDDED_MARKER} {' '.join(embedded)}",
            *(f"{var}={env[var]}" for var in SERVICE_VARS if env.get(var)),
        ]
        path = self.data_dir / SERVICES_ENV
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)

    def _prepare_steps(self) -> list[list[str]]:
        from django.conf import settings

        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        steps = [manage + ["migrate", "--noinput"], manage + ["demo_setup"]]
        if not settings.SERVE_STATIC:
            # Someone else serves STATIC_ROOT, so it must be filled.
            steps.append(manage + ["collectstatic", "--noinput", "-v", "0"])
        return steps

    def _run_step(self, argv: list[str], env: dict[str, str]) -> bool:
        self._say(f"up: {' '.join(argv[2:])}")
        proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        while proc.poll() is None:
            if self._stop_signal:
                self._stop_process(proc)
                return False
            time.sleep(0.1)
        if proc.returncode != 0:
            self._say(f"up: `{' '.join(argv[2:])}` failed (exit code {proc.returncode})")
            return False
        return True

    # --- children ---------------------------------------------------------------------
    def _child_commands(self, env: dict[str, str]) -> list[Child]:
        from django.conf import settings

        celery = [sys.executable, "-m", "celery", "-A", "config"]
        children = [
            *self._web_children(),
            Child(
                "celery worker",
                celery
                + ["worker", "-l", "INFO", "-Q", ",".join(settings.CELERY_QUEUE_NAMES)]
                + ["-c", str(self.concurrency), "-n", f"up-{os.getpid()}@%h"],
            ),
        ]
        from config.beat_lock import beat_lock_holder

        holder = beat_lock_holder(_lock_url(env))
        if holder:
            self._say(
                f"up: a Celery beat is already running against this Redis ({holder}); "
                "not starting a second one (exactly one beat may run)."
            )
        else:
            children.append(
                Child(
                    "celery beat",
                    celery
                    + [
                        "beat",
                        "-l",
                        "INFO",
                        "-S",
                        "django_celery_beat.schedulers:DatabaseScheduler",
                    ]
                    + ["--pidfile", str(self.data_dir / "celerybeat.pid")],
                )
            )
        return children

    def _web_children(self) -> list[Child]:
        if self._web_socket is None:  # IPv6, one process binding its own socket
            argv = [sys.executable, "-m", "daphne", "-b", self.host, "-p", str(self.port)]
            return [Child("web (daphne)", argv + ["config.asgi:application"])]
        count = self.web_processes
        return [
            Child(
                "web (daphne)" if count == 1 else f"web (daphne {i}/{count})",
                daphne_argv(self._web_socket),
                pass_fds=(self._web_socket.fileno(),),
            )
            for i in range(1, count + 1)
        ]

    def _start_children(self, env: dict[str, str]) -> None:
        children = self._child_commands(env)
        if self.demo_sim:
            manage = [sys.executable, str(Path(__file__).resolve().parent.parent / "manage.py")]
            children.append(
                Child("demo simulation", manage + ["simulate_live", "--tenant", "demo"])
            )
        self._start(children, env)

    def _start(self, children: list[Child], env: dict[str, str]) -> None:
        for child in children:
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the children
            # in order instead of all of them racing to exit.
            child.proc = subprocess.Popen(
                child.argv,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                pass_fds=child.pass_fds,
            )
            self.children.append(child)
            self._say(f"{self.command}: started {child.name} (pid {child.pid})")

    def _wait_until_serving(self) -> bool:
        """Until a daphne answers HTTP: a connect alone proves nothing, the socket
        bound here queues connections before any daphne accepts them."""
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        connect_host = "::1" if connect_host == "::" else connect_host
        while not self._stop_signal:
            if self._first_dead_child():
                return False
            conn = http.client.HTTPConnection(connect_host, self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                return True
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
            finally:
                conn.close()
        return False

    def _banner(self) -> None:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        base = f"http://{shown}:{self.port}"
        self._say(
            "\n"
            "Proactive Churn Prevention is up.\n"
            f"  dashboard   {base}/\n"
            f"  admin       {base}/admin/\n"
            f"  API docs    {base}/api/docs/   (OpenAPI schema: {base}/api/schema/)\n"
            f"  data dir    {self.data_dir}\n"
            f"  web         {self._web_summary()}\n"
            "Press Ctrl-C to stop.\n"
        )

    def _web_summary(self) -> str:
        if self.web_processes == 1:
            return "1 daphne process"
        return f"{self.web_processes} daphne processes on one socket ({WEB_PROCESSES_VAR})"

    def _first_dead_child(self) -> Child | None:
        for child in self.children:
            if child.optional and child.proc is not None and child.proc.poll() is not None:
                self._say(
                    f"{self.command}: {child.name} exited (code {child.proc.returncode}); going on."
                )
                child.proc = None
                continue
            if child.proc is not None and child.proc.poll() is not None:
                self._say(
                    f"{self.command}: {child.name} (pid {child.pid}) exited unexpectedly with code "
                    f"{child.proc.returncode}; stopping everything else."
                )
                return child
        return None

    def _supervise(self, servers: EmbeddedServices) -> int:
        while not self._stop_signal:
            if self._first_dead_child():
                return 1
            dead = servers.dead()
            if dead:
                self._say(
                    f"up: embedded {', '.join(dead)} stopped unexpectedly; stopping everything."
                )
                return 1
            time.sleep(0.25)
        return 0

    def _stop_children(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        if running:
            self._say(f"{self.command}: stopping {', '.join(c.name for c in running)}...")
        # Web first so no new work arrives, then the worker (finishes its tasks), then beat.
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            while child.proc.poll() is None and time.monotonic() < deadline and not self._forced:
                time.sleep(0.1)
            if child.proc.poll() is not None:
                self._say(
                    f"{self.command}: {child.name} stopped (exit code {child.proc.returncode})"
                )
        for child in self.children:
            if child.proc is None:
                continue
            if child.proc.poll() is None:
                self._say(f"{self.command}: {child.name} did not stop in time; killing it")
            # The whole process group: the worker's pool processes go with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        self.children.clear()

    def _stop_process(self, proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config.supervisor",
        description="Run one tier of the stack in the foreground (`manage.py up` runs all).",
    )
    tiers = parser.add_subparsers(dest="tier", required=True)
    web = tiers.add_parser(
        "web",
        help=f"{WEB_PROCESSES_VAR} daphne processes (default 1) sharing one listening socket",
    )
    web.add_argument("--host", default="0.0.0.0", help="address to listen on (IPv4 for >1)")
    web.add_argument("--port", type=int, default=8000, help="port to listen on")
    web.add_argument(
        "--stop-timeout",
        type=float,
        default=20.0,
        help="seconds to wait for the daphnes to exit before killing them",
    )
    args = parser.parse_args(argv)
    supervisor = Supervisor(host=args.host, port=args.port, stop_timeout=args.stop_timeout)
    return supervisor.run_web()


if __name__ == "__main__":
    sys.exit(main())
