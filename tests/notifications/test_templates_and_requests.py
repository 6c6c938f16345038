"""Templates (strict variables, SMS segments, opt-out line) and message_request/cancel."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from churnapp.exceptions import ApplicationError, ConflictError
from churnapp.factories import LeadFactory
from notifications.models import Message, MessageStatus, Template
from notifications.services import message_cancel, message_request, message_withdraw
from notifications.signals import message_status_changed
from notifications.templating import links_extract, sms_segments
from tests.notifications.conftest import template_make


def test_template_with_unknown_variable_is_refused_on_save(tenant):
    # given a template that uses a variable no context provides
    template = Template(
        tenant=tenant, channel="sms", key="x", body_text="Hi {{ lead.first_name }} {{ nope }}"
    )
    # when / then
    with pytest.raises(ValidationError) as exc:
        template.full_clean()
    assert "nope" in str(exc.value)


def test_template_with_syntax_error_is_refused(tenant):
    template = Template(tenant=tenant, channel="sms", key="x", body_text="Hi {% if %}")
    with pytest.raises(ValidationError):
        template.full_clean()


def test_template_may_use_lead_agent_tenant_and_risk_reasons(tenant):
    template = Template(
        tenant=tenant,
        channel="email",
        key="x",
        subject="{{ tenant.name }}",
        body_text="{{ lead.first_name }} {{ agent.name }} {% for r in risk_reasons %}{{ r }}{% endfor %}",
        body_html="<p>{{ lead.first_name }}</p>",
    )
    template.full_clean()


def test_email_template_needs_a_subject(tenant):
    with pytest.raises(ValidationError):
        Template(tenant=tenant, channel="email", key="x", body_text="hi").full_clean()


def test_sms_segments_count_gsm7_and_ucs2():
    assert (sms_segments("a" * 160).encoding, sms_segments("a" * 160).segments) == ("GSM-7", 1)
    assert sms_segments("a" * 161).segments == 2
    assert sms_segments("{" * 80).units == 160  # extension characters count twice
    assert (sms_segments("é" * 10).encoding) == "GSM-7"
    emoji = sms_segments("Hi 🏡" + "a" * 66)
    assert emoji.encoding == "UCS-2"
    assert emoji.units == 71 and emoji.segments == 2  # the emoji is a surrogate pair


def test_links_are_extracted_from_html_and_text():
    links = links_extract('<a href="https://x.test/a?b=1&amp;c=2">x</a>', "see https://y.test/p.")
    assert links == ["https://x.test/a?b=1&c=2", "https://y.test/p"]


def test_request_renders_and_adds_the_opt_out_line_on_the_first_sms_only(tenant, lead):
    # given
    template_make(tenant, "sms")
    # when
    first = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="k1",
    )
    second = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="k2",
    )
    # then
    assert first.body_text.startswith(f"Hi {lead.first_name}, {lead.assigned_agent.name} here.")
    assert first.body_text.endswith("Reply STOP to opt out.")
    assert "STOP" not in second.body_text
    assert first.status == MessageStatus.QUEUED and first.to_address == lead.phone


def test_request_is_idempotent(tenant, lead):
    template_make(tenant, "sms")
    kwargs = dict(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="same",
    )
    first = message_request(**kwargs, metadata={"intervention_id": 1})
    again = message_request(**kwargs, metadata={"intervention_id": 2})
    assert again.pk == first.pk
    assert Message.objects.filter(tenant=tenant).count() == 1
    assert again.metadata == {"intervention_id": 1}


def test_request_picks_the_variant_and_falls_back_to_a(tenant, lead):
    template_make(tenant, "sms", body_text="A text")
    template_make(tenant, "sms", variant="B", body_text="B text")
    b = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        variant="B",
        context={},
        idempotency_key="b",
    )
    c = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        variant="C",
        context={},
        idempotency_key="c",
    )
    assert b.body_text.startswith("B text") and b.variant == "B"
    assert c.body_text.startswith("A text") and c.variant == "A"


def test_request_errors_are_clear(tenant, other_tenant, lead):
    template_make(tenant, "sms")
    with pytest.raises(ApplicationError) as missing:
        message_request(
            tenant=tenant,
            channel="email",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="e",
        )
    assert missing.value.code == "template_missing"
    stranger = LeadFactory(tenant=other_tenant)
    with pytest.raises(ApplicationError) as wall:
        message_request(
            tenant=tenant,
            channel="sms",
            lead=stranger,
            template_key="checkin",
            context={},
            idempotency_key="w",
        )
    assert wall.value.code == "tenant_mismatch"
    with pytest.raises(ApplicationError) as bad:
        message_request(
            tenant=tenant,
            channel="fax",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="f",
        )
    assert bad.value.code == "invalid_channel"


def test_context_variables_missing_at_request_time_are_an_error(tenant, lead):
    template_make(tenant, "sms", body_text="Hi {{ offer }}", sample_context={"offer": "x"})
    with pytest.raises(ApplicationError) as exc:
        message_request(
            tenant=tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="m",
        )
    assert exc.value.code == "template_context"
    ok = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={"offer": "a tour"},
        idempotency_key="m2",
    )
    assert ok.body_text.startswith("Hi a tour")


def test_send_is_enqueued_only_after_commit(tenant, lead, django_capture_on_commit_callbacks):
    template_make(tenant, "sms")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message_request(
            tenant=tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="oc",
        )
    assert (
        len([c for c in callbacks if c.__module__ != "tracking.events"]) == 1
    )  # tracking's broadcasts aside


def test_agent_alert_creates_a_companion_sms_to_the_agent(tenant, lead, agent):
    template_make(
        tenant, "agent_alert", subject="Lead at risk", body_text="{{ lead.first_name }} went quiet"
    )
    alert = message_request(
        tenant=tenant,
        channel="agent_alert",
        agent=agent,
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="alert-1",
        metadata={"intervention_id": 9},
    )
    companion = Message.objects.get(parent=alert)
    assert companion.channel == "sms" and companion.to_address == agent.phone
    assert companion.body_text == alert.body_text and companion.metadata == {"intervention_id": 9}


def test_withdraw_checks_the_status_under_the_lock_not_the_callers_copy(tenant, lead):
    # given a caller's copy read while queued, and a send worker that claimed it since
    template_make(tenant, "sms")
    message = message_request(
        tenant=tenant,
        channel="sms",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="w1",
    )
    stale = Message.objects.get(pk=message.pk)
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENDING)
    # when the caller gives up on it, then the send goes on untouched
    assert stale.status == MessageStatus.QUEUED
    assert message_withdraw(message=stale) is False
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING
    # and a message still queued is cancelled
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.QUEUED)
    assert message_withdraw(message=stale) is True
    assert Message.objects.get(pk=message.pk).status == MessageStatus.CANCELLED


def test_cancel_a_planned_message_signals_and_refuses_twice(tenant, lead):
    template_make(tenant, "sms")
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    message_status_changed.connect(receiver)
    try:
        message = message_request(
            tenant=tenant,
            channel="sms",
            lead=lead,
            template_key="checkin",
            context={},
            idempotency_key="c1",
            not_before=timezone.now() + dt.timedelta(hours=2),
            metadata={"intervention_id": 3},
        )
        with transaction.atomic():
            message_cancel(message=message)
        with pytest.raises(ConflictError):
            message_cancel(message=message)
    finally:
        message_status_changed.disconnect(receiver)
    message.refresh_from_db()
    assert message.status == MessageStatus.CANCELLED
    assert seen[-1]["new_status"] == "cancelled" and seen[-1]["metadata"] == {"intervention_id": 3}
    assert set(seen[-1]) >= {
        "tenant_id",
        "message_id",
        "lead_id",
        "agent_id",
        "channel",
        "previous_status",
        "new_status",
        "reason",
        "metadata",
    }


def test_template_save_service_checks_and_updates(tenant):
    from notifications.services import template_save

    first = template_save(
        tenant=tenant, channel="sms", key="k", body_text="Hi {{ lead.first_name }}"
    )
    again = template_save(
        tenant=tenant, channel="sms", key="k", body_text="Hello {{ lead.first_name }}"
    )
    assert again.pk == first.pk and again.body_text.startswith("Hello")
    with pytest.raises(ValidationError):
        template_save(tenant=tenant, channel="sms", key="k", body_text="Hello {{ lead.nickname }}")
    assert Template.objects.get(pk=first.pk).body_text.startswith("Hello {{ lead.first_name")
