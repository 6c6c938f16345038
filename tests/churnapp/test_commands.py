"""Onboarding commands: tenant_create prints the first key once; apikey_create adds one."""

import io

import pytest
from django.core.management import CommandError, call_command

from churnapp.models import ApiKey, Tenant
from churnapp.services.api_keys import api_key_authenticate


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _key_in(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("pcp_"))


def test_tenant_create_prints_a_working_key(db):
    output = _run(
        "tenant_create",
        "--slug=acme-realty",
        "--name=Acme Realty",
        "--timezone=America/Denver",
        "--ghl-location-id=loc-1",
    )
    tenant = Tenant.objects.get(slug="acme-realty")
    assert (tenant.name, tenant.timezone, tenant.ghl_location_id) == (
        "Acme Realty",
        "America/Denver",
        "loc-1",
    )
    assert api_key_authenticate(raw_key=_key_in(output)).tenant == tenant


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slug=acme", "--name=Again"], "already exists"),
        (["--slug=new", "--name=N", "--timezone=Mars/Base"], "IANA"),
        (["--slug=new", "--name=N", "--ghl-location-id=loc-taken"], "loc-taken"),
        (["--slug=not a slug", "--name=N"], "slug"),
    ],
)
def test_tenant_create_refuses_bad_input(tenant, args, message):
    tenant.ghl_location_id = "loc-taken"
    tenant.save()
    with pytest.raises(CommandError, match=message):
        _run("tenant_create", *args)
    assert Tenant.objects.count() == 1
    assert ApiKey.objects.count() == 0


def test_apikey_create_adds_a_key(tenant):
    output = _run("apikey_create", "--tenant=acme", "--name=zapier")
    api_key = api_key_authenticate(raw_key=_key_in(output))
    assert (api_key.tenant, api_key.name) == (tenant, "zapier")


def test_apikey_create_for_unknown_tenant(db):
    with pytest.raises(CommandError, match="No tenant"):
        _run("apikey_create", "--tenant=ghost")
