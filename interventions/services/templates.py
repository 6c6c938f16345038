"""The default message templates the stage plans use, created per tenant when missing.

Managers edit them (and add variants B, C, ...) in the admin; these are only the
starting point. A template is found by (channel, key, variant): keys are `stage<N>`
(one template per channel, so a fallback to another channel finds its own) and
`escalation_<opened|breached>`.
"""

from __future__ import annotations

from django.db import transaction

from churnapp.models import Tenant
from notifications.models import Template

_REASON = "{% if risk_reasons %}{{ risk_reasons.0.text }}{% else %}it has been a while{% endif %}"

# What orchestration passes besides lead, agent and tenant; templates are checked on
# save against it.
SAMPLE_CONTEXT = {
    "stage": 2,
    "episode": 1,
    "risk_reasons": [{"factor": "reply_silence", "text": "no reply in 12 days", "impact": 0.2}],
    "escalation_id": 1,
    "sla_due_at": "2026-01-01T17:00:00+00:00",
}

DEFAULT_TEMPLATES: list[dict] = [
    {
        "key": "stage1",
        "channel": "email",
        "subject": "Still looking, {{ lead.first_name|default:'there' }}?",
        "body_text": (
            "Hi {{ lead.first_name|default:'there' }},\n\n"
            "{% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %} here. I have a few new listings that fit "
            "what you told me you want. Want me to send them over?\n\n"
            "Unsubscribe: {{ unsubscribe_url }}"
        ),
        "body_html": (
            "<p>Hi {{ lead.first_name|default:'there' }},</p>"
            "<p>{% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %} here. I have a few new listings that fit "
            "what you told me you want. Want me to send them over?</p>"
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        ),
    },
    {
        "key": "stage1",
        "channel": "sms",
        "body_text": "Hi {{ lead.first_name|default:'there' }}, {% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %} "
        "here. New listings in your range this week. Want a quick list?",
    },
    {
        "key": "stage2",
        "channel": "sms",
        "body_text": "{{ lead.first_name|default:'Hi' }}, it's {% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %}. "
        "Can I help with your home search? A 10-minute call this week?",
    },
    {
        "key": "stage2",
        "channel": "email",
        "subject": "A quick call about your search?",
        "body_text": (
            "Hi {{ lead.first_name|default:'there' }},\n\nI'd love to hear where your search "
            "stands. Reply with a time that suits you.\n\n{% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %}\n\n"
            "Unsubscribe: {{ unsubscribe_url }}"
        ),
        "body_html": (
            "<p>Hi {{ lead.first_name|default:'there' }},</p><p>I'd love to hear where your "
            "search stands. Reply with a time that suits you.</p>"
            "<p>{% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %}</p>"
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        ),
    },
    {
        "key": "stage2",
        "channel": "ghl_task",
        "subject": "Call {{ lead.first_name }} {{ lead.last_name }}: going cold",
        "body_text": "Risk is rising: " + _REASON + ". Call today and log the outcome.",
    },
    {
        "key": "stage3",
        "channel": "agent_alert",
        "subject": "Critical: {{ lead.first_name }} {{ lead.last_name }} is about to churn",
        "body_text": "Critical churn risk: " + _REASON + ". Call now.",
    },
    {
        "key": "stage3",
        "channel": "sms",
        "body_text": "{{ lead.first_name|default:'Hi' }}, {% if agent %}{{ agent.name }}{% else %}{{ tenant.name }}{% endif %} here. "
        "Still interested in buying? Reply YES and I'll call you today.",
    },
    {
        "key": "stage3",
        "channel": "email",
        "subject": "Should I keep your search open?",
        "body_text": (
            "Hi {{ lead.first_name|default:'there' }},\n\nShould I keep your home search open? "
            "Reply and I'll call you today.\n\nUnsubscribe: {{ unsubscribe_url }}"
        ),
        "body_html": (
            "<p>Hi {{ lead.first_name|default:'there' }},</p><p>Should I keep your home search "
            'open? Reply and I\'ll call you today.</p><p><a href="{{ unsubscribe_url }}">'
            "Unsubscribe</a></p>"
        ),
    },
    {
        "key": "escalation_opened",
        "channel": "agent_alert",
        "subject": "Escalation: {{ lead.first_name }} {{ lead.last_name }}",
        "body_text": "A critical lead needs you ({{ lead.external_id }}): "
        + _REASON
        + ". Acknowledge in the escalation queue.",
    },
    {
        "key": "escalation_breached",
        "channel": "agent_alert",
        "subject": "SLA breached: {{ lead.first_name }} {{ lead.last_name }}",
        "body_text": "The escalation of {{ lead.external_id }} passed its SLA. Acknowledge now.",
    },
]


@transaction.atomic
def templates_ensure(*, tenant: Tenant) -> int:
    """Create the default templates the tenant lacks (variant A); returns how many."""
    have = set(Template.objects.filter(tenant=tenant, variant="A").values_list("channel", "key"))
    created = 0
    for spec in DEFAULT_TEMPLATES:
        if (spec["channel"], spec["key"]) in have:
            continue
        template = Template(tenant=tenant, variant="A", sample_context=SAMPLE_CONTEXT, **spec)
        template.full_clean()
        template.save()
        created += 1
    return created
