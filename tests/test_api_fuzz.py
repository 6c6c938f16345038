"""Bad input, generated from our own OpenAPI schema by schemathesis: every operation of
the CRM-facing API, with valid and invalid (negative) data, and sequences of operations
linked by the ids they return (the stateful phase), answers without a 5xx and with
responses that conform to the schema. CI sizes here; the long runs are marked slow. Runs in-process over WSGI against the real
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


def _operations_run(api_schema, auth_header, mode, *, max_examples: int) -> list[str]:
    """Every operation, on its own, with `max_examples` generated requests."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 15  # the whole API, not an empty schema

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=max_examples,
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
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_responses_match_the_schema(api_schema, auth_header, mode, ghl_keys):
    failures = _operations_run(api_schema, auth_header, mode, max_examples=8)
    assert not failures, "\n".join(failures)


def _stateful_run(api_schema, auth_header, *, max_examples: int, steps: int) -> list[str]:
    """Run schemathesis' state machine: sequences of calls where one response's values
    (a lead id, an intervention id, an external id) feed the next call through the links
    schemathesis infers from the schema. Every answer: no 5xx; a success conforms."""
    failures: list[str] = []
    calls: list[int] = []

    class Machine(api_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": auth_header}

        def call(self, case, **kwargs):
            with transaction.atomic():  # as above: an error must not poison the next call
                return super().call(case, **kwargs)

        def validate_response(self, response, case, **kwargs):
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
            elif response.status_code < 400:
                try:
                    case.validate_response(response, checks=[response_schema_conformance])
                except FailureGroup as exc:
                    failures.append(f"{case.method} {case.formatted_path}: {exc}"[:1500])

    Machine.run(
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
    # The run made calls, and some of them succeeded (links carried real ids).
    assert len(calls) >= max_examples and any(code < 400 for code in calls), calls[:50]
    return failures


def test_stateful_sequences_have_no_server_errors_and_conform(api_schema, auth_header, ghl_keys):
    machine = api_schema.as_state_machine()
    links = [name for name in dir(machine) if "__GET_api_leads_lead_id_" in name]
    assert links, "no links between operations: the stateful phase would test nothing"
    failures = _stateful_run(api_schema, auth_header, max_examples=15, steps=6)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_stateful_sequences_long_run(api_schema, auth_header, ghl_keys):
    failures = _stateful_run(api_schema, auth_header, max_examples=300, steps=12)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_long_run(api_schema, auth_header, mode, ghl_keys):
    failures = _operations_run(api_schema, auth_header, mode, max_examples=100)
    assert not failures, "\n".join(failures)
