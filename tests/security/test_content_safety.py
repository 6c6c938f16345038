"""What leads and CRMs write comes back out as text: template syntax in lead fields is
never executed, CSV exports cannot carry spreadsheet formulas, and a click redirect goes
only to a URL the message itself contained, however the token is tampered with."""

from __future__ import annotations

import csv
import io

import pytest
from django.conf import settings
from django.core import signing
from django.core.management import call_command
from django.test import Client

from churnapp.factories import LeadFactory
from churnapp.models import Lead
from notifications.email_content import click_url
from notifications.models import ChannelConfig, Message, MessageStatus, Template
from notifications.services import message_request
from notifications.services.sending import message_send
from notifications.tokens import token_make
from tests.tracking.conftest import World

pytestmark = pytest.mark.django_db

INJECTED_NAMES = [
    "{{ settings.SECRET_KEY }}",
    "{% load static %}{% static 'x' %}",
    "{% debug %}",
    "{{ lead.tenant.api_keys.all }}",
    "{% include '/etc/passwd' %}",
    "{{ 7|add:7 }}",
    '<script>alert("x")</script>',
    "${7*7} #{7*7} %(x)s {0}",
]


@pytest.fixture
def email_setup(tenant, settings):
    settings.NOTIFICATION_BACKENDS = {
        **settings.NOTIFICATION_BACKENDS,
        "email": "notifications.backends.locmem.LocmemBackend",
    }
    ChannelConfig.objects.update_or_create(
        tenant=tenant,
        channel="email",
        defaults={"backend": "notifications.backends.locmem.LocmemBackend", "options": {}},
    )
    template = Template(
        tenant=tenant,
        channel="email",
        key="checkin",
        subject="Still looking, {{ lead.first_name }}?",
        body_text="Hi {{ lead.first_name }} {{ lead.last_name }}, any questions?",
        body_html='<p>Hi {{ lead.first_name }}, see <a href="https://homes.test/l/1">this</a></p>',
    )
    template.full_clean()
    template.save()
    return template


@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_template_syntax_in_lead_fields_is_rendered_as_text(api_client, email_setup, tenant, name):
    # given a lead whose name the CRM set to template syntax, through the API
    response = api_client.put(
        "/api/leads/upsert/",
        {"external_id": "inj", "first_name": name, "last_name": name, "email": "inj@example.com"},
        format="json",
    )
    assert response.status_code == 201, response.content
    lead = Lead.objects.get(tenant=tenant, external_id="inj")
    assert lead.first_name == name

    # when a message is rendered and sent to that lead
    message = message_request(
        tenant=tenant,
        channel="email",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key=f"inj-{hash(name)}",
    )
    message_send(message_id=message.pk)
    message.refresh_from_db()

    # then the name appears verbatim in text (HTML-escaped in HTML), nothing evaluated
    assert message.status == MessageStatus.SENT, message.status_reason
    assert message.subject == f"Still looking, {name}?"
    assert message.body_text == f"Hi {name} {name}, any questions?"
    assert settings.SECRET_KEY not in message.subject + message.body_text + message.body_html
    assert "<script>" not in message.body_html
    if "<" in name:
        assert "&lt;script&gt;" in message.body_html
    assert "14" not in message.body_text and "49" not in message.body_text


# --- CSV injection ------------------------------------------------------------------------
FORMULAS = [
    '=HYPERLINK("https://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _cells(api_client, dataset: str) -> list[dict]:
    response = api_client.get(f"/api/tracking/export/{dataset}.csv")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_exports_neutralise_formulas(api_client, tenant):
    # given rows whose text came from the CRM or a provider
    world = World(tenant)
    for formula in FORMULAS:
        lead = LeadFactory(tenant=tenant, external_id=formula)
        iv = world.intervention(started=world.lead().created_at, lead=lead, channel="sms")
        Message.objects.filter(pk=iv.steps.get().message_id).update(status_reason=formula)
        iv.outcome_reason = formula
        iv.save(update_fields=["outcome_reason"])

    # when they are exported
    rows = _cells(api_client, "interventions") + _cells(api_client, "messages")

    # then no text cell starts like a formula; the text is kept after an apostrophe
    assert rows
    for row in rows:
        for cell in row.values():
            if cell.startswith(TRIGGERS):
                float(cell)  # only a (negative) number may start with "-"
    exported = {row["lead__external_id"] for row in rows if "lead__external_id" in row}
    assert exported == {"'" + f for f in FORMULAS}
    assert {row["status_reason"] for row in rows if "status_reason" in row} >= {
        "'" + f for f in FORMULAS
    }


def test_churn_score_report_neutralises_formulas(tenant, tmp_path):
    # given leads whose CRM ids look like formulas (the rules model scores without training)
    for formula in FORMULAS:
        LeadFactory(tenant=tenant, external_id=formula, status="active")

    # when the scores report is written
    out = tmp_path / "scores.csv"
    call_command("churn_score", "--tenant", str(tenant.pk), "--out", str(out))

    # then every id is kept as text after an apostrophe
    rows = list(csv.DictReader(out.open(newline="")))
    assert {row["external_id"] for row in rows} == {"'" + f for f in FORMULAS}


# --- Click redirects ----------------------------------------------------------------------
@pytest.fixture
def two_emails(tenant, other_tenant, email_setup):
    lead = LeadFactory(tenant=tenant, email="a@example.com")
    mine = message_request(
        tenant=tenant,
        channel="email",
        lead=lead,
        template_key="checkin",
        context={},
        idempotency_key="click-1",
    )
    theirs = Message.objects.create(
        tenant=other_tenant,
        lead=LeadFactory(tenant=other_tenant),
        channel="email",
        idempotency_key="click-2",
        status="sent",
        links=["https://evil.example/phish"],
    )
    return mine, theirs


def _path(url: str) -> str:
    return url.replace(settings.PUBLIC_BASE_URL.rstrip("/"), "")


def test_click_redirect_goes_only_to_the_messages_own_urls(two_emails):
    mine, theirs = two_emails
    assert mine.links == ["https://homes.test/l/1"]
    client = Client()
    ok = client.get(_path(click_url(mine.pk, "https://homes.test/l/1")))
    assert ok.status_code == 302 and ok["Location"] == "https://homes.test/l/1"

    tampered = {
        # our own signature over a URL this message never contained
        "foreign url": click_url(mine.pk, "https://evil.example/phish"),
        # another message's URL, with that message's id: signed, but B's URL is not in A
        "swapped message": token_make(purpose="click", message_id=mine.pk, url=theirs.links[0]),
        # a near miss of the real URL
        "near miss": click_url(mine.pk, "https://homes.test/l/1/../../evil"),
        "scheme": click_url(mine.pk, "javascript:alert(1)"),
        # an open-pixel token replayed as a click token
        "other purpose": token_make(purpose="open", message_id=mine.pk),
        # the payload re-encoded with a new URL but the old signature
        "re-signed by hand": signing.dumps(
            {"m": mine.pk, "u": "https://evil.example/"},
            key="not-our-key",
            salt="notifications.click",
        ),
        "garbage": "AAAA:BBBB:CCCC",
    }
    for name, token_or_url in tampered.items():
        path = _path(token_or_url) if token_or_url.startswith("http") else f"/t/c/{token_or_url}"
        response = client.get(path)
        assert response.status_code == 400, name
        assert "Location" not in response, name
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert theirs.status == "sent" and theirs.clicked_at is None
