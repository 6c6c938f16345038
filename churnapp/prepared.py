"""Server-side prepared statements for the hottest writes, over psycopg2.

psycopg2 sends every statement as text, and PostgreSQL parses and plans it anew each
time. For the few statements that every engagement callback runs, planning cost more
than running: the activity statement (lead lock, insert, clocks, rescore hint) took
0.33 ms to plan and 0.16 ms to execute (EXPLAIN ANALYZE, 2026-12-07). A prepared
statement is parsed once per connection, and once PostgreSQL's plan cache settles on its
generic plan (after five runs, when that plan costs no more than the custom ones) it is
not planned again either.

`execute_prepared(cursor, [(name, sql), ...], params)` runs the statements, in order, in
one round trip (`EXECUTE a(...); EXECUTE b(...)`), preparing each one the first time a
connection sees it (one more round trip, once). The SQL is written as for
`cursor.execute`, with `%(key)s` or `%s` placeholders (positional ones numbered across
the statements, in order); the cursor holds the last statement's
result. Values go in as literals interpolated by psycopg2, typed by the statement (give
a cast where the context does not fix a placeholder's type).

Prepared statements belong to the database session: a pooler that hands one server
session to many clients (PgBouncer in transaction mode) breaks them. Set
DATABASE_SERVER_PREPARE=false there, and the statements run as plain text. A session
that lost its statements (DISCARD ALL) fails one call, which forgets what this
connection had prepared; the next call prepares again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


@lru_cache(maxsize=64)
def _compiled(name: str, sql: str) -> tuple[str, str]:
    """(PREPARE text, EXECUTE text with its arguments' placeholders).

    Named placeholders become $1, $2, ... in order of first use (a repeated key is one
    parameter); positional ones are numbered in order."""
    keys: list[str] = []
    positional = 0

    def number(match: re.Match) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        if match.group(0) == "%s":
            positional += 1
            return f"${positional}"
        key = match.group(1)
        if key not in keys:
            keys.append(key)
        return f"${keys.index(key) + 1}"

    body = _PLACEHOLDER.sub(number, sql)
    if keys and positional:
        raise ValueError(f"{name}: named and positional placeholders mixed")
    arguments = ", ".join([f"%({key})s" for key in keys] or ["%s"] * positional)
    execute = f"EXECUTE {name}({arguments})" if arguments else f"EXECUTE {name}"
    return f"PREPARE {name} AS {body}", execute


def _prepared_names(connection) -> set[str]:
    """The statements prepared on this Django connection's current database session."""
    raw = connection.connection
    held = getattr(connection, "_churn_prepared", None)
    if held is None or held[0] is not raw:
        held = (raw, set())
        connection._churn_prepared = held
    return held[1]


def execute_prepared(
    cursor,
    statements: Sequence[tuple[str, str]],
    params: Mapping[str, object] | Sequence[object] = (),
    *,
    prepare: bool = True,
) -> None:
    """Run `statements` ((name, sql) pairs) in order, in one round trip, as prepared
    statements of this connection (plain text when DATABASE_SERVER_PREPARE is off, or
    `prepare` is false: a caller's large batch, whose planning is a small part of its
    work and whose custom plan may differ from the generic plan small batches settle
    on). Each name must always come with the same SQL."""
    if not prepare or not getattr(settings, "DATABASE_SERVER_PREPARE", True):
        cursor.execute(";\n".join(sql for _, sql in statements), params)
        return
    compiled = {name: _compiled(name, sql) for name, sql in statements}
    names = _prepared_names(cursor.db)
    missing = [name for name in compiled if name not in names]
    if missing:
        # The PREPARE text holds no parameters: psycopg2 sends it as it is.
        cursor.execute(";\n".join(compiled[name][0] for name in missing))
        names.update(missing)
    try:
        cursor.execute(";\n".join(execute for _, execute in compiled.values()), params)
    except DatabaseError as exc:
        if getattr(getattr(exc, "__cause__", None), "pgcode", None) == "26000":
            # invalid_sql_statement_name: the session lost them (DISCARD ALL, a
            # pooler); prepare again on the next call.
            names.clear()
        raise
