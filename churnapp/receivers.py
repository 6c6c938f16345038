"""churnapp's own receivers: new inbound activity rescores its leads after commit."""

from __future__ import annotations

from django.db import transaction

from config.handoff import handoff


def rescore_on_inbound(sender, *, tenant_id: int, inbound_lead_ids: list[int], **kwargs) -> None:
    if not inbound_lead_ids:
        return
    from churnapp.tasks import rescore_leads

    lead_ids = list(inbound_lead_ids)
    # A hint, not a duty: the hourly batch rescore scores these leads anyway, so a broker
    # that is down must not turn the committed ingest into an error, and the enqueue (a
    # broker round trip) is handed to this process's handoff thread rather than paid by
    # the request or callback that is waiting for its answer (config/handoff.py).
    transaction.on_commit(
        lambda: handoff(lambda: rescore_leads.delay(tenant_id, lead_ids), name="rescore_leads")
    )
