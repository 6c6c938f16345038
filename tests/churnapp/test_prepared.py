"""churnapp.prepared: server-side prepared statements on the real PostgreSQL."""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from churnapp.prepared import _compiled, execute_prepared

pytestmark = pytest.mark.django_db


def test_placeholders_become_numbered_parameters():
    prepare, execute = _compiled("t_named", "SELECT %(a)s::int + %(b)s::int * %(a)s::int, '%%'")
    assert prepare == "PREPARE t_named AS SELECT $1::int + $2::int * $1::int, '%'"
    assert execute == "EXECUTE t_named(%(a)s, %(b)s)"
    prepare, execute = _compiled("t_pos", "SELECT %s::int, %s::text")
    assert (prepare, execute) == (
        "PREPARE t_pos AS SELECT $1::int, $2::text",
        "EXECUTE t_pos(%s, %s)",
    )
    with pytest.raises(ValueError, match="mixed"):
        _compiled("t_mixed", "SELECT %s, %(a)s")


def test_prepared_once_per_connection_then_executed_in_one_round_trip(
    django_assert_num_queries, settings
):
    settings.DATABASE_SERVER_PREPARE = True
    # names this session has not prepared yet
    first_name, second_name = (f"t_{k}_{uuid.uuid4().hex[:12]}" for k in ("a", "b"))
    statements = [
        (first_name, "SELECT %(n)s::int"),
        (second_name, "SELECT %(n)s::int * 10 + %(m)s::int, 'a%%b'"),
    ]
    with django_assert_num_queries(2) as first, connection.cursor() as cursor:
        execute_prepared(cursor, statements, {"n": 4, "m": 2})
        # the cursor holds the last statement's result
        assert cursor.fetchall() == [(42, "a%b")]
    with django_assert_num_queries(1) as second, connection.cursor() as cursor:
        execute_prepared(cursor, statements, {"n": 5, "m": 3})
        assert cursor.fetchall() == [(53, "a%b")]
    assert first.captured_queries[0]["sql"].startswith(f"PREPARE {first_name} AS SELECT $1::int;")
    assert second.captured_queries[0]["sql"] == (
        f"EXECUTE {first_name}(5);\nEXECUTE {second_name}(5, 3)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name IN (%s, %s)",
            [first_name, second_name],
        )
        assert cursor.fetchone() == (2,)


def test_a_session_that_lost_its_statements_fails_once_then_prepares_again(settings):
    settings.DATABASE_SERVER_PREPARE = True
    statements = [("t_lost", "SELECT %s::int + 1")]
    with connection.cursor() as cursor:
        execute_prepared(cursor, statements, [1])
        assert cursor.fetchone() == (2,)
        cursor.execute("DEALLOCATE ALL")  # as DISCARD ALL or a pooler's reset would
        with pytest.raises(DatabaseError), transaction.atomic():
            execute_prepared(cursor, statements, [1])
        execute_prepared(cursor, statements, [2])
        assert cursor.fetchone() == (3,)


def test_off_runs_the_statements_as_plain_sql(django_assert_num_queries, settings):
    settings.DATABASE_SERVER_PREPARE = False
    with django_assert_num_queries(1) as captured, connection.cursor() as cursor:
        execute_prepared(cursor, [("t_plain", "SELECT %s::int * 2")], [21])
        assert cursor.fetchone() == (42,)
    assert captured.captured_queries[0]["sql"] == "SELECT 21::int * 2"


def test_a_caller_may_run_a_statement_unprepared(django_assert_num_queries, settings):
    settings.DATABASE_SERVER_PREPARE = True
    with django_assert_num_queries(1) as captured, connection.cursor() as cursor:
        execute_prepared(cursor, [("t_big", "SELECT %s::int * 2")], [4], prepare=False)
        assert cursor.fetchone() == (8,)
    assert captured.captured_queries[0]["sql"] == "SELECT 4::int * 2"
