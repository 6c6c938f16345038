"""The admin: a manager sees only their tenant; API keys are shown once; reprocess works."""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from churnapp.factories import AgentFactory, LeadActivityFactory, LeadFactory
from churnapp.models import AgentRole, ApiKey, WebhookEvent, WebhookStatus
from churnapp.services.api_keys import api_key_authenticate, api_key_create


@pytest.fixture
def manager_client(client, tenant):
    user = User.objects.create_user("manager", password="x" * 12, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="churnapp",
            codename__in=[
                "view_lead",
                "change_lead",
                "view_tenant",
                "change_tenant",
                "view_apikey",
                "add_apikey",
                "change_apikey",
                "view_agent",
                "view_webhookevent",
                "view_leadactivity",
            ],
        )
    )
    AgentFactory(tenant=tenant, user=user, role=AgentRole.MANAGER)
    client.force_login(user)
    return client


@pytest.fixture
def superuser_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "x" * 12))
    return client


def test_manager_sees_only_their_tenants_leads(manager_client, tenant, other_tenant):
    # given
    mine = LeadFactory(tenant=tenant, first_name="Mine")
    theirs = LeadFactory(tenant=other_tenant, first_name="Theirs")
    AgentFactory(tenant=other_tenant, name="Their Agent")
    LeadFactory(tenant=other_tenant, assigned_agent=AgentFactory(tenant=other_tenant, name="Z"))
    # when
    changelist = manager_client.get(reverse("admin:churnapp_lead_changelist"))
    # then
    assert changelist.status_code == 200
    shown = list(changelist.context["cl"].result_list)
    assert shown == [mine]
    assert b"Their Agent" not in changelist.content and b"Theirs" not in changelist.content
    foreign = manager_client.get(reverse("admin:churnapp_lead_change", args=[theirs.pk]))
    assert foreign.status_code in (302, 404)
    if foreign.status_code == 302:
        assert foreign["Location"] == reverse("admin:index")
    own = manager_client.get(reverse("admin:churnapp_lead_change", args=[mine.pk]))
    assert own.status_code == 200


def test_manager_sees_only_their_tenant(manager_client, tenant, other_tenant):
    response = manager_client.get(reverse("admin:churnapp_tenant_changelist"))
    assert list(response.context["cl"].result_list) == [tenant]
    assert manager_client.get(reverse("admin:churnapp_tenant_add")).status_code == 403
    foreign = manager_client.get(reverse("admin:churnapp_tenant_change", args=[other_tenant.pk]))
    assert foreign.status_code in (302, 404)


def test_lead_timeline_is_newest_first_and_limited(superuser_client, tenant):
    lead = LeadFactory(tenant=tenant)
    activities = [LeadActivityFactory(lead=lead) for _ in range(55)]
    response = superuser_client.get(reverse("admin:churnapp_lead_change", args=[lead.pk]))
    assert response.status_code == 200
    (formset,) = [f for f in response.context["inline_admin_formsets"]]
    rows = [form.instance for form in formset.formset.forms]
    assert len(rows) == 50
    times = [a.occurred_at for a in rows]
    assert times == sorted(times, reverse=True)
    newest = max(activities, key=lambda a: (a.occurred_at, a.pk))
    assert rows[0] == newest


def test_api_key_created_in_the_admin_is_shown_once(manager_client, tenant, other_tenant):
    response = manager_client.post(
        reverse("admin:churnapp_apikey_add"), {"name": "zapier"}, follow=True
    )
    assert response.status_code == 200
    (message,) = [str(m) for m in response.context["messages"] if "pcp_" in str(m)]
    raw = next(word for word in message.split() if word.startswith("pcp_"))
    api_key = ApiKey.objects.get(name="zapier")
    assert api_key.tenant == tenant  # the manager's tenant, whatever the form said
    assert api_key_authenticate(raw_key=raw) == api_key
    # the change page never shows the secret or its hash
    page = manager_client.get(reverse("admin:churnapp_apikey_change", args=[api_key.pk]))
    assert raw.encode() not in page.content
    assert api_key.hashed_key.encode() not in page.content


def test_revoke_action(manager_client, tenant, other_tenant):
    mine, _ = api_key_create(tenant=tenant)
    theirs, _ = api_key_create(tenant=other_tenant)
    manager_client.post(
        reverse("admin:churnapp_apikey_changelist"),
        {"action": "revoke", "_selected_action": [mine.pk, theirs.pk]},
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None
    assert theirs.revoked_at is None  # not in the manager's queryset


def test_reprocess_action_requeues_a_failed_event(
    superuser_client, tenant, django_capture_on_commit_callbacks
):
    event = WebhookEvent.objects.create(
        tenant=tenant,
        webhook_id="wh-1",
        event_type="ContactCreate",
        payload={},
        signature_scheme="ed25519",
        status=WebhookStatus.FAILED,
        error="boom",
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        superuser_client.post(
            reverse("admin:churnapp_webhookevent_changelist"),
            {"action": "reprocess", "_selected_action": [event.pk]},
        )
    event.refresh_from_db()
    assert event.status == WebhookStatus.RECEIVED and event.error == ""
    assert len(callbacks) == 1


def test_webhook_events_are_read_only(superuser_client, tenant):
    event = WebhookEvent.objects.create(
        tenant=tenant, webhook_id="wh-2", event_type="X", payload={}, signature_scheme="rsa"
    )
    page = superuser_client.get(reverse("admin:churnapp_webhookevent_change", args=[event.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert superuser_client.get(reverse("admin:churnapp_webhookevent_add")).status_code == 403


def test_every_changelist_renders(superuser_client, tenant):
    LeadActivityFactory(lead=LeadFactory(tenant=tenant))
    for model in ("tenant", "agent", "apikey", "lead", "leadactivity", "webhookevent"):
        response = superuser_client.get(reverse(f"admin:churnapp_{model}_changelist"))
        assert response.status_code == 200, model


def test_superuser_creates_a_key_for_any_tenant(superuser_client, other_tenant):
    response = superuser_client.post(
        reverse("admin:churnapp_apikey_add"),
        {"tenant": other_tenant.pk, "name": "ops"},
        follow=True,
    )
    assert response.status_code == 200
    assert ApiKey.objects.get(name="ops").tenant == other_tenant


def test_tenant_form_refuses_a_bad_time_zone(superuser_client, db):
    response = superuser_client.post(
        reverse("admin:churnapp_tenant_add"),
        {
            "name": "New",
            "slug": "new",
            "timezone": "Mars/Base",
            "currency": "USD",
            "saved_lead_value": "3000.00",
            "is_active": "on",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "IANA" in str(response.context["adminform"].form.errors["timezone"])


def test_lead_form_normalizes_the_phone(superuser_client, tenant):
    lead = LeadFactory(tenant=tenant)
    page = superuser_client.get(reverse("admin:churnapp_lead_change", args=[lead.pk]))
    form = page.context["adminform"].form
    data = {
        name: ("" if value is None else value)
        for name, value in form.initial.items()
        if name in form.fields
    }
    data.update(
        {
            "tenant": tenant.pk,
            "phone": "(512) 555-0177",
            "dnd_channels": "",
            "tags": "",
            "custom_fields": "{}",
            "activities-TOTAL_FORMS": "0",
            "activities-INITIAL_FORMS": "0",
        }
    )
    data = {k: v for k, v in data.items() if v is not False}
    response = superuser_client.post(reverse("admin:churnapp_lead_change", args=[lead.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    lead.refresh_from_db()
    assert lead.phone == "+15125550177"
