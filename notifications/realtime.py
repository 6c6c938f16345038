"""Channel-layer group names shared by the agent alert backend and the dashboard consumers,
and the one way synchronous code publishes to a group."""

from asgiref.sync import async_to_sync


def tenant_group(tenant_id: int) -> str:
    return f"tenant-{tenant_id}"


def agent_group(agent_id: int) -> str:
    return f"agent-{agent_id}"


def group_send_sync(layer, group: str, message: dict) -> None:
    """Publish `message` to `group` from synchronous code: the project's layer's
    `group_send_blocking` (one PUBLISH, config.channel_layers), or, for another layer
    backend settings may name, its async `group_send` run to completion."""
    if hasattr(layer, "group_send_blocking"):
        layer.group_send_blocking(group, message)
    else:
        async_to_sync(layer.group_send)(group, message)
