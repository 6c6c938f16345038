"""`manage.py demo_setup`: the demo tenant, its manager, an admin and an API key (idempotent)."""

from django.core.management.base import BaseCommand

from churnapp.services.demo import DEMO_TENANT_SLUG, demo_setup


class Command(BaseCommand):
    help = (
        "Create the demo tenant with a manager (staff, tenant-scoped), an admin superuser "
        "and a demo API key; print their secrets once, on creation. Safe to run again."
    )

    def handle(self, *args, **options):
        result = demo_setup()
        out = self.stdout
        if result.tenant_created:
            out.write(f'Created demo tenant "{result.tenant.slug}" ({result.tenant.name}).')
        for username, password, role in (
            ("manager", result.manager_password, f"staff, sees only tenant {DEMO_TENANT_SLUG}"),
            ("admin", result.admin_password, "superuser"),
        ):
            if password:
                out.write(f"  {username:<8} password: {password}   ({role})")
        if result.api_key:
            out.write(
                f"  demo API key:     {result.api_key}\n"
                '  (send it as "Authorization: Api-Key <key>"; it is shown only this once)'
            )
        if not (result.tenant_created or result.manager_password or result.admin_password):
            out.write(
                f'Demo tenant "{DEMO_TENANT_SLUG}", users manager and admin and the demo API key '
                "already exist; their secrets were printed when they were created "
                "(`manage.py changepassword manager` sets a new password)."
            )
