"""Through a real Celery worker on Redis: the stage-1 email is sent by the worker and
the intervention turns active when notifications reports the send."""

from __future__ import annotations

import time

import pytest

from interventions.models import Intervention
from notifications.models import Message


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_first_send_activates_the_intervention(celery_worker, lead, policy, assess):
    # given a lead rising to early warning (messages enqueued after commit)
    assess(lead, "early_warning")
    intervention = Intervention.objects.get(lead=lead)
    assert intervention.status == "planned"
    # when the worker sends the email
    message = Message.objects.get(lead=lead, channel="email")
    assert _wait(lambda: Message.objects.get(pk=message.pk).status == "sent"), Message.objects.get(
        pk=message.pk
    ).status_reason
    # then the intervention is active, stamped when the send happened
    intervention.refresh_from_db()
    assert intervention.status == "active" and intervention.activated_at is not None
