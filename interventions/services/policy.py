"""Tenant policies: the defaults, the active version, and publishing a new version."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from churnapp.models import Tenant
from interventions.models import InterventionPolicy, MessageVariant, Stage, StagePolicy

# The stage plans of the product brief: stage 1 email then SMS; stage 2 SMS and email
# plus a GHL task for the agent; stage 3 agent alert, GHL workflow, SMS and a manager
# escalation. Windows 72/48/24 h; success targets 45/60/70 %.
DEFAULT_STAGES: dict[int, dict] = {
    Stage.EARLY_WARNING: {
        "channel_plan": [{"channel": "email", "to": "lead", "fallback": ["sms"]}],
        "response_window_hours": 72,
        "cooldown_hours": 72,
        "success_target": Decimal("0.450"),
        "escalate_to_manager": False,
    },
    Stage.ACTIVE_RISK: {
        "channel_plan": [
            {"channel": "sms", "to": "lead", "fallback": ["email"]},
            {"channel": "email", "to": "lead", "fallback": []},
            {"channel": "ghl_task", "to": "agent", "fallback": []},
        ],
        "response_window_hours": 48,
        "cooldown_hours": 72,
        "success_target": Decimal("0.600"),
        "escalate_to_manager": False,
    },
    Stage.CRITICAL: {
        "channel_plan": [
            {"channel": "agent_alert", "to": "agent", "fallback": []},
            {"channel": "ghl_workflow", "to": "lead", "fallback": []},
            {"channel": "sms", "to": "lead", "fallback": ["email"]},
        ],
        "response_window_hours": 24,
        "cooldown_hours": 168,
        "success_target": Decimal("0.700"),
        "escalate_to_manager": True,
    },
}

LEAD_CHANNELS = ("sms", "email", "in_app", "push", "ghl_workflow")
AGENT_CHANNELS = ("agent_alert", "ghl_task", "push", "sms", "email")


@transaction.atomic
def policy_ensure(*, tenant: Tenant) -> InterventionPolicy:
    """The tenant's active policy, creating the default one (and variant A per stage)."""
    policy = (
        InterventionPolicy.objects.select_for_update().filter(tenant=tenant, is_active=True).first()
    )
    if policy is not None:
        return policy
    # Serialize creation per tenant so two concurrent first assessments make one policy.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    policy = InterventionPolicy.objects.filter(tenant=tenant, is_active=True).first()
    if policy is not None:
        return policy
    latest = InterventionPolicy.objects.filter(tenant=tenant).order_by("-version").first()
    policy = InterventionPolicy.objects.create(
        tenant=tenant, version=(latest.version + 1) if latest else 1, note="defaults"
    )
    from interventions.services.templates import templates_ensure

    templates_ensure(tenant=tenant)
    for stage, values in DEFAULT_STAGES.items():
        StagePolicy.objects.create(policy=policy, stage=stage, **values)
        MessageVariant.objects.get_or_create(tenant=tenant, stage=stage, key="A")
    return policy


def stage_policy_active(*, tenant: Tenant, stage: int) -> StagePolicy:
    """The stage of the tenant's active policy, with that policy joined: one read on the
    detection path. The tenant's first call creates the default policy. No row lock: an
    intervention planned while a new version is being published keeps the version it
    read, as interventions planned before the publication do."""
    stage_policy = (
        StagePolicy.objects.select_related("policy")
        .filter(policy__tenant=tenant, policy__is_active=True, stage=stage)
        .order_by("policy_id")
        .first()
    )
    if stage_policy is None:
        policy = policy_ensure(tenant=tenant)
        stage_policy = policy.stages.get(stage=stage)
        stage_policy.policy = policy
    return stage_policy


def stage_plan_validate(channel_plan: list) -> list[str]:
    """Problems with a stage's channel plan, in words a manager can act on."""
    problems: list[str] = []
    if not isinstance(channel_plan, list):
        return ["the channel plan must be a list of steps"]
    for index, step in enumerate(channel_plan, start=1):
        if not isinstance(step, dict):
            problems.append(f"step {index} must be an object")
            continue
        channel, to = step.get("channel"), step.get("to", "lead")
        allowed = LEAD_CHANNELS if to == "lead" else AGENT_CHANNELS
        if to not in ("lead", "agent", "manager"):
            problems.append(f"step {index}: 'to' must be lead, agent or manager")
        elif channel not in allowed:
            problems.append(f"step {index}: channel {channel!r} cannot reach the {to}")
        for fallback in step.get("fallback", []):
            if fallback not in allowed:
                problems.append(f"step {index}: fallback {fallback!r} cannot reach the {to}")
    return problems


@transaction.atomic
def policy_publish(
    *, policy: InterventionPolicy, changes: dict, stage_changes: dict | None = None
) -> InterventionPolicy:
    """Publish a new version of `policy` with `changes` applied; the old one is retired.

    Interventions already planned keep pointing at the version they were planned under.
    """
    current = InterventionPolicy.objects.select_for_update().get(pk=policy.pk)
    InterventionPolicy.objects.filter(tenant=current.tenant, is_active=True).update(is_active=False)
    stages = list(current.stages.all())
    new = InterventionPolicy.objects.get(pk=current.pk)
    new.pk = None
    new.version = (
        InterventionPolicy.objects.filter(tenant=current.tenant)
        .order_by("-version")
        .first()
        .version
        + 1
    )
    new.is_active = True
    for field, value in changes.items():
        setattr(new, field, value)
    new.full_clean()
    new.save()
    for stage in stages:
        stage.pk = None
        stage.policy = new
        for field, value in (stage_changes or {}).get(stage.stage, {}).items():
            setattr(stage, field, value)
        stage.save()
    return new
