"""Bad input, generated from our own OpenAPI schema by schemathesis: every operation of
the CRM-facing API, with valid and invalid (negative) data, answers without a 5xx and
with responses that conform to the schema. Runs in-process over WSGI against the real
PostgreSQL; webhook and callback endpoints (signature-authenticated) answer 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance
from schemathesis.core.failures import FailureGroup

from churnapp.services.api_keys import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(db):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from config.wsgi import application

    # As Django's test client does: the WSGI handler must not close the connection that
    # holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def auth_header(tenant) -> dict:
    _, raw = api_key_create(tenant=tenant, name="fuzz")
    return {"Authorization": f"Api-Key {raw}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_responses_match_the_schema(api_schema, auth_header, mode, ghl_keys):
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 15  # the whole API, not an empty schema

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):
            # A savepoint per call: a request that errors must not poison the next one.
            with transaction.atomic():
                response = case.call(headers=auth_header)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
                return
            if mode == GenerationMode.POSITIVE and response.status_code < 400:
                try:
                    case.validate_response(response, checks=[response_schema_conformance])
                except FailureGroup as exc:  # schemathesis' check failures
                    failures.append(f"{case.method} {case.formatted_path}: {exc}"[:1500])

        try:
            check()
        except Unsatisfiable:
            # No invalid input exists for this operation (nothing to get wrong).
            assert mode == GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures)
