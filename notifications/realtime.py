"""Channel-layer group names shared by the agent alert backend and the dashboard consumers."""


def tenant_group(tenant_id: int) -> str:
    return f"tenant-{tenant_id}"


def agent_group(agent_id: int) -> str:
    return f"agent-{agent_id}"
