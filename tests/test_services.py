"""Embedded Redis and PostgreSQL: real servers that keep their data and stop cleanly."""

import shutil
import tempfile
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis

from config.services import EmbeddedPostgres, EmbeddedRedis


@pytest.fixture
def server_dir():
    """A data dir for embedded servers outside pytest's tmp_path: a concurrent pytest
    session chmods /tmp/pytest-of-<user> to 0700, which would lock out the PostgreSQL
    server's own system user mid-test."""
    path = Path(tempfile.mkdtemp(prefix="churn-test-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_embedded_redis_keeps_its_data_across_a_clean_stop(server_dir):
    # given
    first = EmbeddedRedis(server_dir / "redis")
    redis.Redis.from_url(first.start()).set("kept", "yes")
    pid = first.pid

    # when
    first.stop()

    # then
    assert _gone(pid)
    server_log = (server_dir / "redis" / "redis.log").read_text()
    assert "User requested shutdown" in server_log  # SHUTDOWN SAVE, not SIGTERM or SIGKILL
    assert "Received SIGTERM" not in server_log
    second = EmbeddedRedis(server_dir / "redis")
    try:
        assert redis.Redis.from_url(second.start()).get("kept") == b"yes"
        assert second.pid != pid
    finally:
        second.stop()


def test_embedded_postgres_starts_answers_and_stops(server_dir):
    server = EmbeddedPostgres(server_dir / "pg")
    url = server.start()
    pid = server.pid
    try:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        conn = psycopg2.connect(
            host=unquote(parts.hostname or ""), user="postgres", dbname=parts.path.lstrip("/")
        )
        with conn, conn.cursor() as cursor:
            cursor.execute("select current_database()")
            assert cursor.fetchone()[0] == "churn"
        conn.close()
    finally:
        server.stop()

    assert _gone(pid)
    assert not server.alive()
