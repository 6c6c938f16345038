"""The whole stack (daphne, two workers, beat) restarted mid-run while interventions'
messages are in flight and the API ingests: work resumes; every accepted activity is
stored, every intervention goes active, every message is sent exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db import transaction

from churnapp.factories import AgentFactory
from churnapp.models import LeadActivity
from churnapp.services.api_keys import api_key_create
from churnapp.signals import risk_assessed
from interventions.models import Intervention
from interventions.services.policy import policy_ensure
from notifications.models import ChannelConfig, Message, MessageStatus
from tests.fakes.smtp import SmtpServer
from tests.faults.conftest import (
    FINAL,
    SEND_ENV,
    IngestClients,
    leads_make,
    status_counts,
    twilio_channel,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LEADS = 15


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def _risk_rises(leads, tier: str) -> None:
    """What scoring does when a lead's tier rises: the interventions app plans its stage
    and the messages' sends are enqueued after commit."""
    for lead in leads:
        with transaction.atomic():
            type(lead).objects.filter(pk=lead.pk).update(risk_tier=tier, risk_score=0.7)
            risk_assessed.send(
                sender=None,
                tenant_id=lead.tenant_id,
                lead_id=lead.id,
                assessment_id=None,
                previous_tier="low",
                new_tier=tier,
                score=0.7,
                model_version="faults",
                reasons=[{"factor": "silence", "text": "no reply in 12 days", "impact": 0.2}],
            )


def _stack(processes, env: dict) -> list:
    return [
        processes.daphne(env),
        processes.worker(
            "stack-sends@%h",
            ["sms", "email", "crm", "realtime", "default"],
            env,
            pool="threads",
            concurrency=4,
        ),
        processes.worker("stack-work@%h", ["scoring", "webhooks", "interventions"], env),
        processes.beat(env),
    ]


def test_the_whole_stack_restarted_mid_run_resumes_and_sends_nothing_twice(
    tenant, twilio, smtp, processes, redis_flushed
):
    # given a tenant whose SMS go to Twilio and email to an SMTP server, with the default
    # policy (no holdout, quiet hours off), and leads whose risk is about to rise
    twilio_channel(tenant, twilio)
    ChannelConfig.objects.create(
        tenant=tenant, channel="email", backend="notifications.backends.email.DjangoEmailBackend"
    )
    policy = policy_ensure(tenant=tenant)
    policy.holdout_percent = 0
    policy.quiet_hours_start = policy.quiet_hours_end
    policy.save()
    agent = AgentFactory(tenant=tenant)
    everyone = leads_make(tenant, LEADS + 10)
    # the API ingests inbound activity of other leads: a reply from a lead in an
    # intervention would engage it and cancel its pending messages (by design)
    leads, ingest_leads = everyone[:LEADS], everyone[LEADS:]
    type(leads[0]).objects.filter(pk__in=[lead.pk for lead in leads]).update(assigned_agent=agent)
    _, api_key = api_key_create(tenant=tenant, name="faults")
    env = {
        **SEND_ENV,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "NOTIFICATIONS_SWEEP_EVERY_SECONDS": "1",
        "NOTIFICATIONS_SWEEP_AFTER_SECONDS": "3",
        "NOTIFICATIONS_STALE_SENDING_SECONDS": "5",
    }
    stack = _stack(processes, env)
    web = stack[0]
    clients = IngestClients(web.url, api_key, [lead.external_id for lead in ingest_leads]).start()
    try:
        # when the leads' risk rises (stage 2: SMS, email and a GHL task each)
        _risk_rises(leads, "active_risk")
        ids = list(Message.objects.filter(tenant=tenant).values_list("pk", flat=True))
        assert len(ids) == 3 * LEADS
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() >= 8,
            timeout=120,
            describe=lambda: (status_counts(ids), processes.logs()),
        )
        # ...and the whole stack goes down mid-run: web and workers killed -9 (a crash,
        # an OOM kill), beat stopped (it releases its lock; a killed beat's lock blocks
        # the next beat for its TTL), then everything starts again
        sent_at_restart = Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count()
        in_flight = Message.objects.filter(pk__in=ids, status=MessageStatus.SENDING).count()
        restarted_at = time.monotonic()
        for process in stack[:3]:
            process.kill()
        stack[3].stop()
        # Claims the killed workers held: each may have reached its provider, and where
        # the provider cannot be asked (SMTP) the sweeper flags it "unknown" for a person
        # rather than risk a second send.
        held = set(
            Message.objects.filter(pk__in=ids, status=MessageStatus.SENDING).values_list(
                "pk", flat=True
            )
        )
        for process in stack:
            process.start()
        answered = clients.count()
        wait_for(lambda: clients.count() >= answered + 10, timeout=60)
    finally:
        clients.stop()

    # then every message ends sent, exactly once at the providers
    wait_for(
        lambda: not Message.objects.filter(pk__in=ids).exclude(status__in=FINAL).exists(),
        timeout=180,
        interval=0.5,
        describe=lambda: (status_counts(ids), processes.logs()),
    )
    resumed_in = time.monotonic() - restarted_at
    statuses = status_counts(ids)
    unknown = set(
        Message.objects.filter(pk__in=ids, status=MessageStatus.UNKNOWN).values_list(
            "pk", flat=True
        )
    )
    assert unknown <= held, (unknown, held)
    assert statuses.get(MessageStatus.SENT, 0) + len(unknown) == len(ids), statuses
    sms = Counter(r.form()["Body"] for r in twilio.requests_to("POST"))
    sent = Message.objects.filter(pk__in=ids, status=MessageStatus.SENT)
    sms_bodies = set(sent.filter(channel="sms").values_list("body_text", flat=True))
    # every sent message reached its provider exactly once; none reached it twice
    assert sms_bodies <= set(sms) and set(sms.values()) == {1}, sms
    mails = Counter(to for _, rcpts in smtp.envelopes for to in rcpts)
    sent_to = Counter(sent.filter(channel="email").values_list("to_address", flat=True))
    assert set(mails.values()) <= {1} and set(sent_to) <= set(mails), (mails, sent_to)
    # every intervention went active on its first send
    assert set(Intervention.objects.filter(tenant=tenant).values_list("status", flat=True)) == {
        "active"
    }
    # the API took ingest before and after the restart; what it accepted is stored
    answers = clients.by_status()
    assert set(answers) <= {0, 200, 201}, answers  # 0: refused while daphne was down
    accepted = clients.accepted_ids()
    stored = set(
        LeadActivity.objects.filter(tenant=tenant, source_event_id__in=accepted).values_list(
            "source_event_id", flat=True
        )
    )
    assert stored == accepted
    print(
        "stack restart:",
        {
            "messages": len(ids),
            "sent_before_restart": sent_at_restart,
            "in_flight_at_restart": in_flight,
            "statuses": statuses,
            "held_by_killed_workers": len(held),
            "sms_requests": sum(sms.values()),
            "emails": sum(mails.values()),
            "duplicates": sum(1 for n in [*sms.values(), *mails.values()] if n > 1),
            "api_answers": answers,
            "activities_accepted": len(accepted),
            "losses": len(accepted - stored),
            "seconds_restart_to_all_sent": round(resumed_in, 1),
        },
    )
