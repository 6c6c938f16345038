"""churnapp's own receivers: new inbound activity hints its leads' rescoring."""

from __future__ import annotations

from churnapp.hints import rescore_hint


def rescore_on_inbound(sender, *, tenant_id: int, inbound_lead_ids: list[int], **kwargs) -> None:
    # A hint, not a duty (the hourly run scores these leads anyway): a NOTIFY in the
    # ingest's own transaction, relayed to Celery by a worker once it commits
    # (churnapp.hints). The request pays one statement, not a broker round trip.
    if inbound_lead_ids:
        rescore_hint(tenant_id=tenant_id, lead_ids=inbound_lead_ids)
