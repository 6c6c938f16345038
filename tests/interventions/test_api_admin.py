"""The interventions API and the managers' escalation queue, behind tenant walls."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from churnapp.factories import AgentFactory, LeadFactory
from churnapp.models import AgentRole
from interventions.models import Escalation, Intervention


@pytest.fixture
def critical_lead(lead, policy, manager, assess):
    assess(lead, "critical")
    return lead


def test_list_and_detail_show_steps(api_client, critical_lead):
    response = api_client.get("/api/interventions/", {"stage": 3})
    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert row["lead_external_id"] == critical_lead.external_id and row["status"] == "planned"
    detail = api_client.get(f"/api/interventions/{row['id']}/").json()
    assert [s["channel"] for s in detail["steps"]] == ["agent_alert", "ghl_workflow", "sms"]
    assert all(s["message_status"] == "queued" for s in detail["steps"])
    by_lead = api_client.get(f"/api/leads/{critical_lead.id}/interventions/").json()
    assert [r["id"] for r in by_lead["results"]] == [row["id"]]


def test_crm_records_a_conversion(api_client, critical_lead):
    intervention = Intervention.objects.get(lead=critical_lead)
    response = api_client.post(
        f"/api/interventions/{intervention.id}/outcome/", {"outcome": "converted"}, format="json"
    )
    assert response.status_code == 200 and response.json()["outcome"] == "converted"
    # the lead came back: its escalation closes itself, saying why
    escalation = Escalation.objects.get(intervention=intervention)
    assert escalation.status == "resolved" and "converted" in escalation.notes


def test_bad_outcome_is_a_clear_400(api_client, critical_lead):
    intervention = Intervention.objects.get(lead=critical_lead)
    response = api_client.post(
        f"/api/interventions/{intervention.id}/outcome/", {"outcome": "maybe"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_escalation_acknowledge_then_resolve(api_client, critical_lead):
    escalation = Escalation.objects.get(lead=critical_lead)
    listed = api_client.get("/api/escalations/").json()["results"]
    assert [e["id"] for e in listed] == [escalation.id]
    ack = api_client.post(f"/api/escalations/{escalation.id}/acknowledge/", {"note": "calling"})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    again = api_client.post(f"/api/escalations/{escalation.id}/acknowledge/")
    assert again.status_code == 409
    done = api_client.post(f"/api/escalations/{escalation.id}/resolve/", {"note": "booked"})
    assert done.json()["status"] == "resolved" and "booked" in done.json()["notes"]


def test_another_tenant_sees_nothing(other_api_client, critical_lead):
    intervention = Intervention.objects.get(lead=critical_lead)
    escalation = Escalation.objects.get(lead=critical_lead)
    assert other_api_client.get("/api/interventions/").json()["results"] == []
    assert other_api_client.get(f"/api/interventions/{intervention.id}/").status_code == 404
    assert other_api_client.get(f"/api/leads/{critical_lead.id}/interventions/").status_code == 404
    assert other_api_client.get("/api/escalations/").json()["results"] == []
    response = other_api_client.post(f"/api/escalations/{escalation.id}/acknowledge/")
    assert response.status_code == 404
    escalation.refresh_from_db()
    assert escalation.status == "open"


def _manager_client(tenant) -> Client:
    from django.contrib.auth.models import Permission

    user = User.objects.create_user(f"mgr-{tenant.slug}", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="interventions"))
    AgentFactory(tenant=tenant, user=user, role=AgentRole.MANAGER)
    client = Client()
    client.force_login(user)
    return client


def test_admin_escalation_queue_is_scoped_and_actionable(critical_lead, other_tenant):
    # given an escalation in each tenant (the other lead has no agent)
    foreign_lead = LeadFactory(tenant=other_tenant)
    from churnapp.signals import risk_assessed
    from interventions.services.policy import policy_ensure

    policy_ensure(tenant=other_tenant)
    type(foreign_lead).objects.filter(pk=foreign_lead.pk).update(risk_tier="critical")
    risk_assessed.send(
        sender=None,
        tenant_id=other_tenant.id,
        lead_id=foreign_lead.id,
        assessment_id=None,
        previous_tier="low",
        new_tier="critical",
        score=0.9,
        model_version="t",
        reasons=[],
    )
    mine = Escalation.objects.get(lead=critical_lead)
    theirs = Escalation.objects.get(lead=foreign_lead)
    client = _manager_client(critical_lead.tenant)
    # when the manager opens the queue
    page = client.get("/admin/interventions/escalation/")
    # then only their tenant's escalation is there, with its SLA countdown
    assert page.status_code == 200
    assert f"/admin/interventions/escalation/{mine.id}/change/" in page.content.decode()
    assert f"/admin/interventions/escalation/{theirs.id}/change/" not in page.content.decode()
    assert "SLA left" in page.content.decode()
    assert client.get(f"/admin/interventions/escalation/{theirs.id}/change/").status_code in (
        302,
        404,
    )
    # and the acknowledge action works from the queue
    client.post(
        "/admin/interventions/escalation/",
        {"action": "acknowledge", "_selected_action": [mine.id, theirs.id]},
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.status == "acknowledged" and theirs.status == "open"


def _form_data(response) -> dict:
    """The POST a browser would send for an unchanged admin change form (with inlines)."""
    data = {}

    def add(form):
        for name, field in form.fields.items():
            value = form.initial.get(name, field.initial)
            if value is None:
                continue
            key = form.add_prefix(name)
            if isinstance(value, bool):
                if value:
                    data[key] = "on"
            elif isinstance(value, dict | list):
                data[key] = json.dumps(value)
            else:
                data[key] = value.pk if hasattr(value, "pk") else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[formset.management_form.add_prefix(name)] = value
        for form in formset.forms:
            add(form)
            data[form.add_prefix("id")] = form.instance.pk
            data[form.add_prefix("policy")] = form.instance.policy_id
    return data


def test_admin_edit_of_a_policy_publishes_a_new_version_and_keeps_the_old(policy):
    from interventions.models import InterventionPolicy

    client = _manager_client(policy.tenant)
    url = f"/admin/interventions/interventionpolicy/{policy.id}/change/"
    page = client.get(url)
    assert page.status_code == 200
    data = _form_data(page)
    # the manager raises the daily cap and lengthens stage 2's response window
    data["cap_per_day"] = policy.cap_per_day + 1
    stage2 = next(i for i, s in enumerate(policy.stages.order_by("stage")) if s.stage == 2)
    data[f"stages-{stage2}-response_window_hours"] = 60

    response = client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    old, new = InterventionPolicy.objects.filter(tenant=policy.tenant).order_by("version")
    assert (old.version, new.version) == (policy.version, policy.version + 1)
    assert not old.is_active and new.is_active
    assert (old.cap_per_day, new.cap_per_day) == (policy.cap_per_day, policy.cap_per_day + 1)
    old_windows = {s.stage: s.response_window_hours for s in old.stages.all()}
    new_windows = {s.stage: s.response_window_hours for s in new.stages.all()}
    assert old_windows == {1: 72, 2: 48, 3: 24}
    assert new_windows == {1: 72, 2: 60, 3: 24}
