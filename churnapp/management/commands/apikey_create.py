"""manage.py apikey_create: add another API key to a tenant and print it once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from churnapp.models import Tenant
from churnapp.services.api_keys import api_key_create


class Command(BaseCommand):
    help = "Create another API key for a tenant (printed once, never stored)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant's slug")
        parser.add_argument("--name", default="default", help="A name for the key")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with slug {options['tenant']!r}.")
        if not tenant.is_active:
            raise CommandError(f"Tenant {tenant.slug!r} is inactive; activate it first.")
        name = options["name"].strip()
        if not name or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        api_key, raw = api_key_create(tenant=tenant, name=name)
        self.stdout.write(
            f"API key {api_key.prefix!r} ({api_key.name}) for {tenant.slug!r}; "
            "copy it now, it is shown once:"
        )
        self.stdout.write(raw)
