"""Through a real Celery worker on Redis: the stage-1 email is sent by the worker and
the intervention turns active when notifications reports the send."""

from __future__ import annotations

import pytest

from interventions.models import Intervention
from notifications.models import Message
from tests.waiting import wait_for


@pytest.mark.django_db(transaction=True)
def test_first_send_activates_the_intervention(celery_worker, lead, policy, assess):
    # given a lead rising to early warning (messages enqueued after commit)
    assess(lead, "early_warning")
    intervention = Intervention.objects.get(lead=lead)
    assert intervention.status == "planned"
    # when the worker sends the email
    message = Message.objects.get(lead=lead, channel="email")
    assert wait_for(lambda: Message.objects.get(pk=message.pk).status == "sent"), (
        Message.objects.get(pk=message.pk).status_reason
    )
    # then the intervention is active, stamped when the send happened
    intervention.refresh_from_db()
    assert intervention.status == "active" and intervention.activated_at is not None
