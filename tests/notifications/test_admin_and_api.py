"""The admin screens (messages, attempts, suppressions, dead letters, replay) and the
push subscription API."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from churnapp.factories import AgentFactory, LeadFactory
from notifications.models import DeliveryAttempt, Message, MessageStatus, PushSubscription
from notifications.services import message_request, suppression_add
from tests.notifications.conftest import template_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_message(tenant, lead):
    template_make(tenant, "sms")
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="d1",
    )
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.DEAD, attempts=5, status_reason="gave up after 5 attempts"
    )
    DeliveryAttempt.objects.create(
        tenant=tenant,
        message=message,
        number=5,
        backend="x",
        started_at=message.created_at,
        outcome="transient",
        status_code=503,
        error="provider error 503",
    )
    return message


@pytest.fixture
def superuser_client():
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_messages_attempts_suppressions_and_dead_ones(
    superuser_client, dead_message, tenant, lead
):
    suppression_add(tenant=tenant, channel="sms", address=lead.phone, reason="manual", note="asked")
    pages = {
        "message": reverse("admin:notifications_message_changelist") + "?attention=dead",
        "change": reverse("admin:notifications_message_change", args=[dead_message.pk]),
        "attempts": reverse("admin:notifications_deliveryattempt_changelist"),
        "suppressions": reverse("admin:notifications_suppression_changelist"),
        "templates": reverse("admin:notifications_template_changelist"),
        "configs": reverse("admin:notifications_channelconfig_changelist"),
    }
    bodies = {name: superuser_client.get(url) for name, url in pages.items()}
    assert all(r.status_code == 200 for r in bodies.values())
    assert (
        b"d1" in bodies["change"].content
        or str(dead_message.pk).encode() in bodies["message"].content
    )
    assert b"gave up after 5 attempts" in bodies["change"].content
    assert b"provider error 503" in bodies["change"].content
    assert lead.phone.encode() in bodies["suppressions"].content


def test_admin_replay_queues_a_dead_message_again(
    superuser_client, dead_message, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = superuser_client.post(
            reverse("admin:notifications_message_changelist"),
            {"action": "replay_messages", "_selected_action": [dead_message.pk]},
        )
    assert response.status_code == 302
    dead_message.refresh_from_db()
    assert dead_message.status == MessageStatus.QUEUED and dead_message.max_attempts == 10
    assert "replayed by root" in dead_message.status_reason
    assert (
        len([c for c in callbacks if c.__module__ != "tracking.events"]) == 1
    )  # the send is enqueued after commit


def test_admin_is_scoped_to_the_managers_tenant(dead_message, other_tenant):
    # given a manager of another tenant
    user = User.objects.create_user("mgr", "m@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="notifications"))
    AgentFactory(tenant=other_tenant, user=user, role="manager")
    client = Client()
    client.force_login(user)
    # then they see no message of the first tenant
    listing = client.get(reverse("admin:notifications_message_changelist"))
    assert listing.status_code == 200 and listing.context["cl"].result_count == 0
    detail = client.get(reverse("admin:notifications_message_change", args=[dead_message.pk]))
    assert detail.status_code in (302, 404)


def test_template_admin_refuses_an_unknown_variable(superuser_client, tenant):
    response = superuser_client.post(
        reverse("admin:notifications_template_add"),
        {
            "tenant": tenant.pk,
            "channel": "sms",
            "key": "bad",
            "variant": "A",
            "subject": "",
            "body_text": "Hi {{ nobody }}",
            "body_html": "",
            "sample_context": "{}",
            "is_active": "on",
        },
    )
    assert response.status_code == 200 and b"nobody" in response.content


def test_an_agent_registers_a_push_subscription_with_their_session(tenant):
    user = User.objects.create_user("agent", "a@example.com", "pw")
    agent = AgentFactory(tenant=tenant, user=user)
    client = APIClient()
    client.force_login(user)
    body = {"endpoint": "https://push.example.test/sub/1", "keys": {"p256dh": "BPk", "auth": "au"}}
    response = client.post("/api/notifications/push-subscriptions/", body, format="json")
    assert response.status_code == 201, response.content
    sub = PushSubscription.objects.get()
    assert sub.agent == agent and sub.tenant == tenant and sub.p256dh == "BPk"
    # registering again updates the same row
    client.post(
        "/api/notifications/push-subscriptions/",
        {**body, "keys": {"p256dh": "BPk2", "auth": "au"}},
        format="json",
    )
    assert PushSubscription.objects.get().p256dh == "BPk2"
    deleted = client.post(
        "/api/notifications/push-subscriptions/delete/",
        {"endpoint": body["endpoint"]},
        format="json",
    )
    assert deleted.status_code == 204 and not PushSubscription.objects.exists()


def test_push_subscription_api_validates_and_is_tenant_scoped(api_client, tenant, other_tenant):
    LeadFactory(tenant=other_tenant, external_id="theirs")
    body = {"endpoint": "https://push.example.test/sub/2", "keys": {"p256dh": "k", "auth": "a"}}
    no_owner = api_client.post("/api/notifications/push-subscriptions/", body, format="json")
    assert no_owner.status_code == 400 and no_owner.json()["error"]["code"] == "no_recipient"
    stranger = api_client.post(
        "/api/notifications/push-subscriptions/",
        {**body, "lead_external_id": "theirs"},
        format="json",
    )
    assert stranger.status_code == 404
    bad = api_client.post(
        "/api/notifications/push-subscriptions/", {"endpoint": "not a url"}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"
    anonymous = APIClient().post("/api/notifications/push-subscriptions/", body, format="json")
    assert anonymous.status_code in (401, 403)
