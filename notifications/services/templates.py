"""Writing templates: every save is checked by rendering against the sample context."""

from __future__ import annotations

from django.db import transaction

from churnapp.models import Tenant
from notifications.models import Template


@transaction.atomic
def template_save(
    *,
    tenant: Tenant,
    channel: str,
    key: str,
    body_text: str,
    variant: str = "A",
    subject: str = "",
    body_html: str = "",
    sample_context: dict | None = None,
    is_active: bool = True,
) -> Template:
    """Create or update the (tenant, channel, key, variant) template.

    Raises django ValidationError (unknown variable, syntax error, missing subject)."""
    template = Template.objects.filter(
        tenant=tenant, channel=channel, key=key, variant=variant
    ).first() or Template(tenant=tenant, channel=channel, key=key, variant=variant)
    template.subject = subject
    template.body_text = body_text
    template.body_html = body_html
    template.sample_context = sample_context or {}
    template.is_active = is_active
    template.full_clean()
    template.save()
    return template
