"""Score every active lead of a tenant as of an instant and write a CSV report."""

from __future__ import annotations

import csv
import json
import sys

from django.core.management.base import BaseCommand

from churnapp.csv_safety import csv_text_safe
from churnapp.management.commands._tenant_arg import instant_from_arg, tenant_from_arg
from churnapp.models import Lead
from churnapp.risk_selectors import tenant_lead_ids
from churnapp.services.model_registry import scorer_for_tenant
from churnapp.services.scoring import CHUNK_SIZE, _agent_hours, leads_score


class Command(BaseCommand):
    help = (
        "Score every active lead as of --as-of with the tenant's active model (or rules-v1) "
        "and write external id, probability, tier, model version and reasons. Writes "
        "nothing to the database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--as-of")
        parser.add_argument("--out", help="CSV path; default stdout")

    def handle(self, *args, **options):
        tenant = tenant_from_arg(options["tenant"])
        as_of = instant_from_arg(options["as_of"])
        scorer = scorer_for_tenant(tenant_id=tenant.id)
        hours = _agent_hours(tenant_id=tenant.id, as_of=as_of, fresh=True)
        ids = tenant_lead_ids(tenant_id=tenant.id, only_active=True)
        out = open(options["out"], "w", newline="") if options["out"] else sys.stdout
        try:
            writer = csv.writer(out)
            writer.writerow(["external_id", "probability", "tier", "model_version", "reasons"])
            n = 0
            for start in range(0, len(ids), CHUNK_SIZE):
                chunk = [int(i) for i in ids[start : start + CHUNK_SIZE]]
                scored = leads_score(
                    tenant_id=tenant.id,
                    as_of=as_of,
                    lead_ids=chunk,
                    agent_response_hours=hours,
                    scorer=scorer,
                )
                external = dict(Lead.objects.filter(pk__in=chunk).values_list("id", "external_id"))
                for i, lead_id in enumerate(scored.lead_ids):
                    writer.writerow(
                        [
                            # The CRM's id, as given: a report opened in a spreadsheet
                            # must not run it as a formula.
                            csv_text_safe(external[int(lead_id)]),
                            f"{scored.scores[i]:.4f}",
                            scored.tiers[i],
                            scored.model_version,
                            json.dumps([r["text"] for r in scored.reasons[i]]),
                        ]
                    )
                    n += 1
        finally:
            if out is not sys.stdout:
                out.close()
        self.stderr.write(
            f"scored {n} leads of {tenant.slug} as of {as_of.isoformat()} with {scorer.version}"
        )
