"""Admin: the lead timeline and the lifecycle log are tenant-scoped; CSV export actions."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from churnapp.factories import AgentFactory
from churnapp.models import AgentRole
from notifications.models import Message
from tests.tracking.conftest import at
from tracking.admin import lead_timeline_url
from tracking.events import tracking_event_record

D = dt.date(2026, 3, 2)


@pytest.fixture
def manager_client(client, tenant):
    user = User.objects.create_user("manager", password="x" * 12, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=["tracking", "interventions", "notifications"],
            codename__startswith="view_",
        )
    )
    AgentFactory(tenant=tenant, user=user, role=AgentRole.MANAGER)
    client.force_login(user)
    return client


def test_lead_timeline_shows_only_that_lead_of_the_managers_tenant(
    manager_client, world, other_world
):
    mine = world.intervention(started=at(D), outcome="re_engaged")
    other_lead_iv = world.intervention(started=at(D), outcome="churned")
    theirs = other_world.intervention(started=at(D), outcome="churned")
    for iv in (mine, other_lead_iv, theirs):
        tracking_event_record(
            tenant_id=iv.tenant_id,
            kind="outcome_recorded",
            lead_id=iv.lead_id,
            intervention_id=iv.id,
        )
    page = manager_client.get(lead_timeline_url(mine.lead_id))
    assert page.status_code == 200
    shown = list(page.context["cl"].result_list)
    assert shown and {e.lead_id for e in shown} == {mine.lead_id}
    assert [e.id for e in shown] == sorted(e.id for e in shown)
    # the other tenant's lead id gives an empty timeline, never its rows
    foreign = manager_client.get(lead_timeline_url(theirs.lead_id))
    assert list(foreign.context["cl"].result_list) == []
    everything = manager_client.get(reverse("admin:tracking_trackingevent_changelist"))
    assert {e.tenant_id for e in everything.context["cl"].result_list} == {world.tenant.id}


def test_export_actions_stream_the_selected_rows(manager_client, world, other_world):
    mine = world.intervention(started=at(D), outcome="re_engaged")
    theirs = other_world.intervention(started=at(D), outcome="churned")
    response = manager_client.post(
        reverse("admin:interventions_intervention_changelist"),
        {
            "action": "export_interventions_csv",
            "_selected_action": [mine.id, theirs.id],
        },
    )
    assert response.status_code == 200 and response.streaming
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert lines[0].startswith("id,lead_id")
    # the other tenant's row is not in the manager's queryset, so not exported
    assert [line.split(",")[0] for line in lines[1:]] == [str(mine.id)]

    messages = manager_client.post(
        reverse("admin:notifications_message_changelist"),
        {
            "action": "export_messages_csv",
            "_selected_action": list(Message.objects.values_list("id", flat=True)),
        },
    )
    body = b"".join(messages.streaming_content).decode().strip().splitlines()
    assert len(body) == 2  # header and this tenant's one message
