"""The project's settings point at a real PostgreSQL and Redis."""

import redis
from django.conf import settings
from django.db import connection


def test_database_is_postgresql(db):
    with connection.cursor() as cursor:
        cursor.execute("select version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


def test_redis_answers():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set("smoke", "1", ex=5)
    assert client.get("smoke") == b"1"
