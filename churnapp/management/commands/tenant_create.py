"""manage.py tenant_create: onboard a brokerage and print its first API key once."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from churnapp.exceptions import ApplicationError
from churnapp.services.api_keys import api_key_create
from churnapp.services.tenants import tenant_create


class Command(BaseCommand):
    help = "Create a tenant and its first API key (the key is printed once, never stored)."

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True, help="URL-safe id, e.g. acme-realty")
        parser.add_argument("--name", required=True, help="The brokerage's name")
        parser.add_argument(
            "--timezone", default="America/New_York", help="IANA time zone (default %(default)s)"
        )
        parser.add_argument("--ghl-location-id", default="", help="GHL location (sub-account) id")
        parser.add_argument("--key-name", default="default", help="Name of the first API key")

    def handle(self, *args, **options):
        try:
            with transaction.atomic():
                tenant = tenant_create(
                    slug=options["slug"],
                    name=options["name"],
                    timezone=options["timezone"],
                    ghl_location_id=options["ghl_location_id"],
                )
                api_key, raw = api_key_create(tenant=tenant, name=options["key_name"])
        except ApplicationError as exc:
            raise CommandError(exc.message)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            )
        self.stdout.write(self.style.SUCCESS(f"Created tenant {tenant.slug!r} ({tenant.name})."))
        self.stdout.write(
            f"API key {api_key.prefix!r} ({api_key.name}); copy it now, it is shown once:"
        )
        self.stdout.write(raw)
