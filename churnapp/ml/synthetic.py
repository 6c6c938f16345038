"""A small deterministic lead history where silence really causes churn (no ORM).

Each lead starts engaged at its own rate. At random it starts cooling: its activity
decays day by day and the agent chases harder. Some cooling leads revive; a lead silent
for two weeks is marked lost with a daily hazard; engaged leads with showings may
convert. So "replies stopped" and "opens falling" precede churn, as in life, and the
model has something true to learn.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

SOURCES = ("zillow", "realtor", "website", "referral")
SOURCE_WEIGHTS = (0.35, 0.25, 0.25, 0.15)
SOURCE_COOLING = {"zillow": 1.6, "realtor": 1.0, "website": 1.2, "referral": 0.5}
STAGES = ("new", "contacted", "showing", "offer")
STAGE_WEIGHTS = (0.3, 0.35, 0.25, 0.1)

INBOUND_MIX = {
    "email_open": 0.34,
    "email_click": 0.1,
    "email_reply": 0.12,
    "sms_inbound": 0.12,
    "call_inbound": 0.05,
    "website_visit": 0.12,
    "property_view": 0.09,
    "form_submit": 0.02,
    "appointment_booked": 0.025,
    "showing_attended": 0.015,
}
OUTBOUND_MIX = {"email_outbound": 0.5, "sms_outbound": 0.35, "call_outbound": 0.15}


@dataclass(frozen=True)
class SyntheticLead:
    external_id: str
    source: str
    pipeline_stage: str
    created_at: dt.datetime


@dataclass(frozen=True)
class SyntheticEvent:
    lead_external_id: str
    occurred_at: dt.datetime
    kind: str
    value: float | None = None


def history_generate(
    *,
    n_leads: int = 300,
    days: int = 180,
    end: dt.datetime,
    seed: int = 42,
    prefix: str = "syn",
) -> tuple[list[SyntheticLead], list[SyntheticEvent]]:
    """Leads and their events over `days` days ending at `end` (aware), deterministic."""
    rng = np.random.default_rng(seed)
    start = end - dt.timedelta(days=days)
    in_kinds, in_p = list(INBOUND_MIX), np.array(list(INBOUND_MIX.values()))
    in_p = in_p / in_p.sum()
    out_kinds, out_p = list(OUTBOUND_MIX), np.array(list(OUTBOUND_MIX.values()))
    leads: list[SyntheticLead] = []
    events: list[SyntheticEvent] = []

    for n in range(n_leads):
        external_id = f"{prefix}-{n:05d}"
        source = str(rng.choice(SOURCES, p=SOURCE_WEIGHTS))
        stage = str(rng.choice(STAGES, p=STAGE_WEIGHTS))
        first_day = int(rng.integers(0, max(1, days - 45)))
        base = float(rng.lognormal(math.log(0.9), 0.45))
        cool_hazard = 0.025 * SOURCE_COOLING[source]
        created = start + dt.timedelta(days=first_day, seconds=int(rng.integers(0, 86400)))
        leads.append(SyntheticLead(external_id, source, stage, created))

        rate, cooling, decay, silent_days = base, False, 0.0, 0
        for day in range(first_day, days):
            day_start = start + dt.timedelta(days=day)
            if not cooling and rng.random() < cool_hazard:
                cooling, decay = True, float(rng.uniform(0.08, 0.3))
            elif cooling and rng.random() < 0.025:
                cooling, rate = False, base  # revived: a new listing, a call back
            rate = rate * math.exp(-decay) if cooling else rate
            n_in = int(rng.poisson(rate))
            n_out = int(rng.poisson(0.3 + (0.5 if cooling else 0.0)))
            stamps = []
            for kind in rng.choice(in_kinds, size=n_in, p=in_p):
                stamps.append((str(kind), None))
            cancelled = cooling and rng.random() < 0.03
            if cancelled:
                stamps.append(("appointment_cancelled", None))
            for kind in rng.choice(out_kinds, size=n_out, p=out_p):
                stamps.append((str(kind), None))
            for kind, value in stamps:
                at = day_start + dt.timedelta(seconds=int(rng.integers(0, 86400)))
                if at <= end:
                    events.append(SyntheticEvent(external_id, at, kind, value))
            silent_days = silent_days + 1 if n_in == 0 and not cancelled else 0
            at_close = day_start + dt.timedelta(hours=23, minutes=59)
            if silent_days >= 14 and rng.random() < 0.05:
                events.append(SyntheticEvent(external_id, at_close, "opportunity_lost"))
                break
            if not cooling and stage in ("showing", "offer") and rng.random() < 0.004:
                events.append(SyntheticEvent(external_id, at_close, "opportunity_won", 1.0))
                break
    events.sort(key=lambda e: (e.occurred_at, e.lead_external_id, e.kind))
    return leads, events
