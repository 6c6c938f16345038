"""churnapp's own receivers: new inbound activity rescores its leads after commit."""

from __future__ import annotations

from django.db import transaction


def rescore_on_inbound(sender, *, tenant_id: int, inbound_lead_ids: list[int], **kwargs) -> None:
    if not inbound_lead_ids:
        return
    from churnapp.tasks import rescore_leads

    lead_ids = list(inbound_lead_ids)
    # robust: a broker that is down must not turn the committed ingest into an error;
    # the hourly batch rescore scores these leads anyway.
    transaction.on_commit(lambda: rescore_leads.delay(tenant_id, lead_ids), robust=True)
