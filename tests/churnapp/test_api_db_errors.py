"""What the API answers when PostgreSQL refuses a request's transaction."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction

from churnapp.api.errors import api_exception_handler


def _raised(sqlstate: str) -> OperationalError:
    # A real error from the server with the given SQLSTATE, wrapped by Django as a view sees it.
    with pytest.raises(OperationalError) as info, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$")
    return info.value


@pytest.mark.django_db
@pytest.mark.parametrize("sqlstate", ["40P01", "40001", "55P03"])
def test_a_concurrency_conflict_is_a_409_to_retry(sqlstate):
    response = api_exception_handler(_raised(sqlstate), {})
    assert response.status_code == 409
    assert response.data["error"]["code"] == "conflict"
    assert "Retry" in response.data["error"]["message"]
    assert response["Retry-After"] == "1"


@pytest.mark.django_db
def test_other_database_failures_stay_503():
    # 57P01: admin_shutdown (the server is going away)
    response = api_exception_handler(_raised("57P01"), {})
    assert response.status_code == 503
    assert response.data["error"]["code"] == "service_unavailable"
