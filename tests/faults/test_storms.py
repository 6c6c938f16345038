"""Provider storms against every provider fake, with a real threaded Celery worker and the
outbox sweeper firing as beat would: 5xx for a sustained period, 429 with Retry-After,
hanging connections, SMTP 4xx/5xx replies. Every message ends sent, given up with its
fallback started, or `unknown`; no provider ever sees a message twice.

The CI variant storms for STORM_SECONDS (default 3) with short backoff; the slow variant
storms for a minute with backoff in seconds, as configured for production."""

# The shared fixtures are imported by name (conftest_storms is not a conftest.py), and
# pytest passes them to the tests under the same names.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import os
import time
from collections import defaultdict
from email.utils import format_datetime

import pytest
from django.db import transaction
from django.utils import timezone

from notifications.models import DeliveryAttempt, Message, MessageStatus, Suppression
from notifications.services import message_request
from tests.fakes.http import Answer, Recorded
from tests.faults.conftest_storms import (  # noqa: F401  (fixtures)
    ACME_CHANNELS,
    FALLBACK,
    OTHER_CHANNELS,
    WENT_OUT,
    Storm,
    attempts_to_outlast,
    leads_make,
    ledger_check,
    other_wire,
    providers,
    send_key,
    sends_by_message,
    settled,
    storm_settings,
    storm_worker,
    sweeper_beat,
    tenants_wire,
    unsettled,
)
from tests.notifications.conftest import template_make, twilio_config
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STORM_SECONDS = float(os.environ.get("STORM_SECONDS", "3"))


def _plan(tenant, leads, channels, *, survivors: int) -> tuple[list[Message], list[Message]]:
    """One message per lead and channel. The first `survivors` leads' messages have the
    full retry budget and no fallback; the others give up after two attempts and fall
    back to another channel."""
    keep, short = [], []
    with transaction.atomic():
        for i, lead in enumerate(leads):
            for channel in channels:
                message = message_request(
                    tenant=tenant,
                    channel=channel,
                    lead=lead,
                    template_key="checkin",
                    context={},
                    idempotency_key=f"{tenant.slug}-{channel}-{i}",
                    fallback_channels=[] if i < survivors else [FALLBACK[channel]],
                )
                (keep if i < survivors else short).append(message)
        Message.objects.filter(pk__in=[m.pk for m in short]).update(max_attempts=2)
    return keep, short


def _storm_5xx(tenant, other_tenant, providers, settings, *, seconds, base, ceiling, leads):
    # given every provider failing: 5xx from the HTTP ones, 4xx replies from SMTP
    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = base
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = ceiling
    settings.NOTIFICATIONS_MAX_ATTEMPTS = attempts_to_outlast(
        2 * seconds, base=base, ceiling=ceiling
    )
    tenants_wire(acme=tenant, other=other_tenant, fakes=providers)
    acme_leads = leads_make(tenant=tenant, n=leads, fakes=providers)
    other_leads = leads_make(tenant=other_tenant, n=leads)
    storm = Storm().begin(providers)
    started = time.monotonic()
    # when messages on every channel are planned in it
    keep_a, short_a = _plan(tenant, acme_leads, ACME_CHANNELS, survivors=leads // 2)
    keep_o, short_o = _plan(other_tenant, other_leads, OTHER_CHANNELS, survivors=leads // 2)
    keep, short = keep_a + keep_o, short_a + short_o
    # the short-budget messages give up inside the storm and fall back (into the storm)
    wait_for(
        lambda: (
            Message.objects.filter(pk__in=[m.pk for m in short], status=MessageStatus.DEAD).count()
            == len(short)
        ),
        timeout=60 + seconds,
        describe=lambda: list(
            Message.objects.filter(pk__in=[m.pk for m in short]).values_list(
                "pk", "channel", "status", "attempts"
            )
        ),
    )
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    storm.end()
    lasted = time.monotonic() - started
    # then every message settles once the providers are back
    wait_for(
        settled([tenant, other_tenant]),
        timeout=120 + 2 * seconds,
        describe=unsettled([tenant, other_tenant]),
    )
    ledger = ledger_check(providers)
    print(f"\n{ledger.line(f'5xx storm {lasted:.1f}s')} storm_answers={storm.answered}")
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
    for message in keep:
        message.refresh_from_db()
        assert message.status in WENT_OUT, (message.pk, message.channel, message.status_reason)
        assert message.attempts > 1, (message.pk, message.channel)
    for message in short:
        message.refresh_from_db()
        assert (message.status, message.attempts) == (MessageStatus.DEAD, 2), message.pk
        fallback = Message.objects.get(fallback_of=message)
        assert fallback.channel == FALLBACK[message.channel]
        assert fallback.status in WENT_OUT, (fallback.pk, fallback.channel, fallback.status_reason)
    # every backend was in the storm and retried through it
    assert {m.channel for m in keep_a} == set(ACME_CHANNELS)
    assert {m.channel for m in keep_o} == set(OTHER_CHANNELS)
    assert ledger.gave_up == len(short) and ledger.fell_back == len(short)
    assert storm.answered >= 2 * len(keep + short)


def test_a_5xx_storm_on_every_provider_ends_in_retries_fallback_or_dead_never_twice(
    tenant, other_tenant, providers, storm_settings, sweeper_beat
):
    _storm_5xx(
        tenant,
        other_tenant,
        providers,
        storm_settings,
        seconds=STORM_SECONDS,
        base=0.1,
        ceiling=1.0,
        leads=4,
    )


@pytest.mark.slow
def test_a_one_minute_5xx_storm_with_production_backoff(
    tenant, other_tenant, providers, storm_settings, sweeper_beat
):
    _storm_5xx(
        tenant,
        other_tenant,
        providers,
        storm_settings,
        seconds=float(os.environ.get("STORM_SLOW_SECONDS", "60")),
        base=5.0,
        ceiling=60.0,
        leads=6,
    )


class RetryAfterOnce:
    """Answers the first send of each message with 429 and a wait, in each provider's
    style; remembers when each message may be retried."""

    def __init__(self, provider: str, style: str, seconds: float) -> None:
        self.provider, self.style, self.seconds = provider, style, seconds
        self.not_before: dict[str, float] = {}

    def __call__(self, request: Recorded) -> Answer | None:
        key = send_key(self.provider, request)
        if key is None or key in self.not_before:
            return None
        headers = {}
        wait = self.seconds
        if self.style == "seconds":
            headers["Retry-After"] = f"{self.seconds:g}"
        elif self.style == "http-date":
            # Whole seconds only: the wait is until that second begins.
            at = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=self.seconds + 1)
            headers["Retry-After"] = format_datetime(at, usegmt=True)
            wait = (at - timezone.now()).total_seconds()
        else:  # GHL's own headers: the burst window is full
            headers.update(
                {
                    "X-RateLimit-Max": "100",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Interval-Milliseconds": str(int(self.seconds * 1000)),
                }
            )
        self.not_before[key] = request.at + wait
        return Answer(429, headers=headers, body={"message": "Too many requests"})


def test_429_with_retry_after_is_honoured_by_every_http_provider(
    tenant, other_tenant, providers, storm_settings, sweeper_beat
):
    # given each HTTP provider answers a message's first send with 429 and a wait, some
    # longer than our own backoff ceiling (those retries are left to the sweeper)
    storm_settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 1.0
    tenants_wire(acme=tenant, other=other_tenant, fakes=providers)
    acme_leads = leads_make(tenant=tenant, n=2, fakes=providers)
    other_leads = leads_make(tenant=other_tenant, n=2)
    limits = {
        "ghl": RetryAfterOnce("ghl", "ghl-headers", 1.0),
        "twilio": RetryAfterOnce("twilio", "seconds", 1.5),
        "push": RetryAfterOnce("push", "seconds", 0.8),
        "in_app": RetryAfterOnce("in_app", "http-date", 1.0),
    }
    for name, fake in providers.named:
        fake.outage = limits[name]
    # when
    _plan(tenant, acme_leads, ACME_CHANNELS, survivors=2)
    _plan(other_tenant, other_leads, ["sms"], survivors=2)
    # then every message went out on its second send, and not before it was allowed
    wait_for(
        settled([tenant, other_tenant]), timeout=60, describe=unsettled([tenant, other_tenant])
    )
    ledger = ledger_check(providers)
    print(f"\n{ledger.line('429 Retry-After')}")
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
    assert ledger.went_out == ledger.messages == 2 * len(ACME_CHANNELS) + 2
    early = []
    for name, fake in providers.named:
        firsts: dict[str, Recorded] = {}
        for request in fake.requests:
            key = send_key(name, request)
            if key is None:
                continue
            if key not in firsts:
                firsts[key] = request
                assert request.answered == 429
            else:
                assert request.answered in (200, 201), (name, key, request.answered)
                if request.at < limits[name].not_before[key]:
                    early.append((name, key, limits[name].not_before[key] - request.at))
        assert firsts, name
    assert early == []
    codes = defaultdict(list)
    for message_id, code in DeliveryAttempt.objects.order_by("number").values_list(
        "message_id", "status_code"
    ):
        codes[message_id].append(code)
    assert all(c[0] == 429 and len(c) == 2 for c in codes.values()), codes


def test_hanging_connections_end_unknown_are_never_resent_and_twilio_reconciles(
    tenant, other_tenant, providers, storm_settings, sweeper_beat
):
    # given every provider takes a message's first send and never answers in time; some
    # act on it (Twilio, in-app, SMTP deliver it), some do not (GHL, push)
    storm_settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 0.5
    tenants_wire(acme=tenant, other=other_tenant, fakes=providers)
    acme_leads = leads_make(tenant=tenant, n=2, fakes=providers)
    other_leads = leads_make(tenant=other_tenant, n=2)
    hung: set[str] = set()

    def hang_once(provider: str, accept: bool):
        def outage(request: Recorded) -> Answer | None:
            key = send_key(provider, request)
            if key is None or key in hung:
                return None
            hung.add(key)
            return Answer(hang=True, accept=accept)

        return outage

    providers.ghl.outage = hang_once("ghl", accept=False)
    providers.push.outage = hang_once("push", accept=False)
    providers.twilio.outage = hang_once("twilio", accept=True)
    providers.inapp.outage = hang_once("in_app", accept=True)
    smtp_hung: set[str] = set()

    def smtp_outage(message_id: str) -> float | None:
        if message_id in smtp_hung:
            return None
        smtp_hung.add(message_id)
        return 3.0  # accepted, answered after the client gave up

    providers.smtp.outage = smtp_outage
    # when messages with fallback channels are sent
    _, acme_rows = _plan(tenant, acme_leads, ["sms", "ghl_task", "push", "in_app"], survivors=0)
    _, other_rows = _plan(other_tenant, other_leads, OTHER_CHANNELS, survivors=0)
    rows = acme_rows + other_rows
    # then each ends unknown after its timeout, except Twilio's, which the sweeper finds
    # at the provider and settles as sent
    wait_for(
        lambda: (
            set(
                Message.objects.filter(pk__in=[m.pk for m in rows]).values_list("status", flat=True)
            )
            <= {MessageStatus.UNKNOWN, MessageStatus.SENT}
        ),
        timeout=60,
        describe=unsettled([tenant, other_tenant]),
    )
    twilio_rows = [m for m in other_rows if m.channel == "sms"]
    wait_for(
        lambda: (
            Message.objects.filter(
                pk__in=[m.pk for m in twilio_rows], status=MessageStatus.SENT
            ).count()
            == len(twilio_rows)
        ),
        timeout=30,
        describe=lambda: list(
            Message.objects.filter(pk__in=[m.pk for m in twilio_rows]).values_list(
                "pk", "status", "status_reason"
            )
        ),
    )
    # and the sweeper, firing again and again, sends none of them again
    fired = sweeper_beat.fired
    wait_for(lambda: sweeper_beat.fired >= fired + 6, timeout=30)
    ledger = ledger_check(providers, rows)
    print(f"\n{ledger.line('hanging connections')}")
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
    assert ledger.unknown == len(rows) - len(twilio_rows) and ledger.went_out == len(twilio_rows)
    sends = sends_by_message(providers)
    assert all(len(sends[m.pk]) == 1 for m in rows), {m.pk: sends[m.pk] for m in rows}
    assert not Message.objects.filter(fallback_of__in=rows).exists()
    for message in Message.objects.filter(pk__in=[m.pk for m in rows]):
        if message.status == MessageStatus.UNKNOWN:
            assert any(
                words in message.status_reason
                for words in ("no answer", "did not answer", "timed out")
            ), message.status_reason
        else:
            assert message.provider_message_id in providers.twilio.messages
    # the message the in-app and SMTP servers took is in their inbox exactly once
    assert len(providers.inapp.inbox) == 2 and len(providers.smtp.messages) == 2


def test_smtp_4xx_replies_are_retried_and_5xx_replies_fall_back(
    other_tenant, providers, storm_settings, sweeper_beat
):
    # given a mail server that greylists one recipient, defers one message, rejects one
    # message as policy (5xx at DATA) and refuses one mailbox (5xx at RCPT); SMS (Twilio)
    # is the fallback
    other_wire(other_tenant, providers)
    greylisted, deferred, rejected, refused = leads_make(tenant=other_tenant, n=4)
    smtp = providers.smtp
    smtp.rcpt_replies[greylisted.email].append("450 4.2.0 Greylisted, try again later")
    smtp.data_replies[deferred.email].append("451 4.3.0 Mail server temporarily rejected")
    smtp.data_replies[rejected.email].append("554 5.7.1 Message rejected by policy")
    smtp.refuse.add(refused.email)
    # when
    with transaction.atomic():
        rows = {
            lead.pk: message_request(
                tenant=other_tenant,
                channel="email",
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=f"mail-{lead.pk}",
                fallback_channels=["sms"],
            )
            for lead in (greylisted, deferred, rejected, refused)
        }
    # then
    wait_for(settled([other_tenant]), timeout=60, describe=unsettled([other_tenant]))
    status = {lead: Message.objects.get(pk=message.pk).status for lead, message in rows.items()}
    assert status == {
        greylisted.pk: MessageStatus.SENT,
        deferred.pk: MessageStatus.SENT,
        rejected.pk: MessageStatus.FAILED,
        refused.pk: MessageStatus.BOUNCED,
    }
    # a 4xx is "later", never a bounce: only the refused mailbox is suppressed
    assert list(Suppression.objects.values_list("address", "reason")) == [(refused.email, "bounce")]
    for lead in (greylisted, deferred):
        codes = list(
            DeliveryAttempt.objects.filter(message=rows[lead.pk])
            .order_by("number")
            .values_list("outcome", flat=True)
        )
        assert codes == ["transient", "sent"], (lead.pk, codes)
    for lead in (rejected, refused):
        fallback = Message.objects.get(fallback_of=rows[lead.pk])
        assert fallback.channel == "sms" and fallback.status in WENT_OUT
    ledger = ledger_check(providers)
    print(f"\n{ledger.line('SMTP 4xx/5xx')}")
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
    delivered = [str(m["To"]) for m in smtp.messages]
    assert sorted(delivered) == sorted([greylisted.email, deferred.email])


def test_a_twilio_retry_is_not_taken_for_an_identical_earlier_sms(
    other_tenant, providers, storm_settings, sweeper_beat
):
    # given two identical check-ins already sent to the same number
    twilio_config(other_tenant, providers.twilio)
    template_make(other_tenant, "sms")
    [lead] = leads_make(tenant=other_tenant, n=1)

    def sms(key: str) -> Message:
        with transaction.atomic():
            return message_request(
                tenant=other_tenant,
                channel="sms",
                lead=lead,
                template_key="checkin",
                context={},
                idempotency_key=key,
            )

    first, second = sms("week-1"), sms("week-2")
    wait_for(
        lambda: (
            Message.objects.filter(pk__in=[first.pk, second.pk], status=MessageStatus.SENT).count()
            == 2
        )
    )
    # when a third, word for word the second, meets a 5xx on its first try
    providers.twilio.program(Answer(500, body={"message": "internal"}, method="POST"))
    third = sms("week-3")
    # then its retry asks Twilio, finds only the others' messages, and sends its own
    wait_for(lambda: Message.objects.get(pk=third.pk).status in WENT_OUT)
    third.refresh_from_db()
    second.refresh_from_db()
    assert third.body_text == second.body_text
    assert third.provider_message_id not in (
        "",
        second.provider_message_id,
        first.provider_message_id,
    )
    posts = [r for r in providers.twilio.requests if r.method == "POST" and r.answered == 201]
    assert len(posts) == 3
    ledger = ledger_check(providers)
    assert ledger.duplicates == 0 and ledger.losses == 0, ledger.problems
