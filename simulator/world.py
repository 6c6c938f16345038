"""A seeded world of simulated leads with a hidden engagement state and known intervention effects (pure: no Django)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

# Hidden states of a lead. ACTIVE leads browse and write at their own rate; DORMANT leads
# are silent until they revive or are lost; LOST and CONVERTED are final.
ACTIVE, DORMANT, LOST, CONVERTED = 0, 1, 2, 3
STATE_NAMES = {ACTIVE: "active", DORMANT: "dormant", LOST: "lost", CONVERTED: "converted"}

# Activity kinds, spelled as churnapp.models.ActivityKind (kept as strings: this module is
# pure). A test checks they are all in churnapp's vocabulary.
WEBSITE_VISIT = "website_visit"
PROPERTY_VIEW = "property_view"
EMAIL_OPEN = "email_open"
EMAIL_REPLY = "email_reply"
SMS_INBOUND = "sms_inbound"
FORM_SUBMIT = "form_submit"
CALL_INBOUND = "call_inbound"
CALL_OUTBOUND = "call_outbound"
APPOINTMENT_BOOKED = "appointment_booked"
OPPORTUNITY_LOST = "opportunity_lost"
OPPORTUNITY_WON = "opportunity_won"

# What an active lead does in an hour when it does something, and how often. Every kind
# except email_open counts as re-engagement for the system (opens of our own mail do not).
ACTIVITY_MIX: tuple[tuple[str, float], ...] = (
    (WEBSITE_VISIT, 0.34),
    (PROPERTY_VIEW, 0.30),
    (EMAIL_OPEN, 0.15),
    (SMS_INBOUND, 0.08),
    (FORM_SUBMIT, 0.05),
    (EMAIL_REPLY, 0.05),
    (CALL_INBOUND, 0.03),
)
REENGAGE_SHARE = sum(w for kind, w in ACTIVITY_MIX if kind != EMAIL_OPEN)

# Relative activity by local hour of day (people browse listings in the evening).
TIME_OF_DAY: tuple[float, ...] = (
    0.10, 0.05, 0.05, 0.05, 0.05, 0.10, 0.30, 0.60,  # 00-07
    0.90, 1.00, 1.00, 1.00, 1.10, 1.00, 0.90, 0.90,  # 08-15
    1.10, 1.40, 1.70, 1.90, 1.80, 1.40, 0.80, 0.30,  # 16-23
)  # fmt: skip

SOURCES: dict[str, dict[str, float]] = {
    # weight, and multipliers of activity rate, dormancy, revival, loss, conversion and
    # responsiveness to our messages.
    "zillow": dict(weight=0.30, rate=1.0, dormancy=1.3, revival=0.8, lost=1.4, conv=0.8, resp=0.9),
    "referral": dict(weight=0.15, rate=1.2, dormancy=0.6, revival=1.3, lost=0.5, conv=1.8, resp=1.25),
    "open_house": dict(weight=0.15, rate=1.0, dormancy=0.9, revival=1.0, lost=0.9, conv=1.2, resp=1.1),
    "website": dict(weight=0.20, rate=0.9, dormancy=1.1, revival=0.9, lost=1.0, conv=0.9, resp=1.0),
    "paid_ads": dict(weight=0.20, rate=0.8, dormancy=1.4, revival=0.7, lost=1.3, conv=0.6, resp=0.8),
}  # fmt: skip
INTENTS: dict[str, dict[str, float]] = {
    "hot": dict(weight=0.2, rate=1.4, dormancy=0.7, conv=2.0),
    "warm": dict(weight=0.5, rate=1.0, dormancy=1.0, conv=1.0),
    "cold": dict(weight=0.3, rate=0.6, dormancy=1.4, conv=0.4),
}
BUDGET_BANDS: tuple[tuple[str, int, int, float], ...] = (
    ("under_300k", 150_000, 300_000, 0.30),
    ("300k_600k", 300_000, 600_000, 0.40),
    ("600k_1m", 600_000, 1_000_000, 0.20),
    ("over_1m", 1_000_000, 3_000_000, 0.10),
)
TIMEZONES: tuple[tuple[str, float], ...] = (
    ("America/New_York", 0.40),
    ("America/Chicago", 0.25),
    ("America/Denver", 0.10),
    ("America/Los_Angeles", 0.25),
)
AREA_CODES = (
    "202", "212", "213", "305", "312", "303", "404", "415", "512", "617", "702", "713",
    "206", "214", "267", "310", "402", "503", "602", "614", "646", "702", "718", "720",
)  # fmt: skip
FIRST_NAMES = ("Ava", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea")
LAST_NAMES = ("Adams", "Baker", "Chen", "Diaz", "Evans", "Fox", "Garcia", "Hill", "Ito", "Jones")

# The world's true effects: the chance that one delivered message makes the lead answer
# (reply, call back, fill a form) within the hour, by stage and channel, for variant A.
# A stage-3 agent call is much stronger than a stage-1 email.
DEFAULT_EFFECTS: dict[tuple[int, str], float] = {
    (1, "email"): 0.22,
    (1, "sms"): 0.28,
    (2, "sms"): 0.26,
    (2, "email"): 0.12,
    (2, "ghl_task"): 0.22,  # the agent's follow-up call from the GHL task
    (3, "agent_alert"): 0.45,  # the agent drops everything and calls
    (3, "ghl_workflow"): 0.08,
    (3, "sms"): 0.22,
    (3, "email"): 0.10,
}
DEFAULT_VARIANT_LIFT: dict[str, float] = {"A": 1.0, "B": 1.15, "C": 0.9}
# How the lead answers each channel (the front door its answer takes).
RESPONSE_KIND: dict[str, str] = {
    "email": EMAIL_REPLY,
    "sms": SMS_INBOUND,
    "ghl_task": CALL_INBOUND,
    "agent_alert": CALL_INBOUND,
    "ghl_workflow": FORM_SUBMIT,
    "in_app": WEBSITE_VISIT,
    "push": WEBSITE_VISIT,
}
AGENT_FACING = frozenset({"ghl_task", "agent_alert"})


@dataclass(frozen=True)
class WorldParams:
    """Every rate of the world. Hazards are per hour."""

    activity_rate: float = 0.05  # chance an active lead does something in an average hour
    dormancy_hazard: float = 1 / (24 * 9)  # active -> dormant: ~9 day active spells
    revival_hazard: float = 1 / (24 * 18)  # dormant -> active on its own: ~18 days
    lost_hazard: float = 1 / (24 * 60)  # dormant lead lost to silence / another agent
    conversion_hazard: float = 1 / (24 * 90)  # active lead books an appointment
    initial_dormant_share: float = 0.35
    effects: dict[tuple[int, str], float] = field(default_factory=lambda: dict(DEFAULT_EFFECTS))
    variant_lift: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_VARIANT_LIFT))
    sms_opt_out_rate: float = 0.02  # per delivered SMS that gets no answer: STOP
    email_bounce_rate: float = 0.04  # share of leads whose address hard-bounces
    email_open_rate: float = 0.45
    email_click_rate: float = 0.25  # of opens
    commission_rate: float = 0.025  # of the budget, for revenue figures

    def effect(self, stage: int, channel: str, variant: str | None) -> float:
        base = self.effects.get((stage, channel), 0.0)
        return min(0.95, base * self.variant_lift.get(variant or "A", 1.0))


@dataclass(frozen=True)
class LeadProfile:
    index: int
    external_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    timezone: str
    source: str
    intent: str
    budget_band: str
    budget: int
    rate: float
    dormancy: float
    revival: float
    lost: float
    conversion: float
    responsiveness: float
    email_bounces: bool
    initial_state: int


@dataclass(frozen=True)
class Event:
    """Something a lead did in the world, in the hour it happened."""

    lead: int
    kind: str
    at: dt.datetime
    event_id: str
    # How it reaches the system: "api" (the CRM pushes activity), "sms_reply" and
    # "email_reply" (GHL InboundMessage webhooks), "status" (lead status through the API).
    via: str = "api"
    body: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """A message the world received for one of its leads, in the hour it was seen."""

    lead: int
    hour: int
    stage: int
    channel: str
    variant: str | None
    message_ref: str = ""


@dataclass
class Reaction:
    bounced: bool = False
    opened: bool = False
    clicked: bool = False
    responded: bool = False
    stopped: bool = False


def _pick(rng: random.Random, weighted) -> object:
    items = list(weighted)
    total = sum(w for _, w in items)
    x = rng.random() * total
    for value, weight in items:
        x -= weight
        if x < 0:
            return value
    return items[-1][0]


def lead_profile(seed: int, index: int, params: WorldParams) -> LeadProfile:
    """The lead's fixed traits, from the seed and its index only."""
    rng = random.Random(f"profile:{seed}:{index}")
    source = _pick(rng, ((k, v["weight"]) for k, v in SOURCES.items()))
    intent = _pick(rng, ((k, v["weight"]) for k, v in INTENTS.items()))
    band = _pick(rng, ((b, b[3]) for b in BUDGET_BANDS))
    tz = _pick(rng, TIMEZONES)
    s, i = SOURCES[source], INTENTS[intent]
    # Individual spread around the segment's rates (log-normal, median 1).
    spread = [rng.lognormvariate(0.0, 0.35) for _ in range(5)]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return LeadProfile(
        index=index,
        external_id=f"sim-{seed}-{index:07d}",
        first_name=first,
        last_name=last,
        email=f"{first.lower()}.{last.lower()}.{index}@sim.example",
        # Fictional numbers (555-0100..0199, reserved for fiction), many area codes.
        phone=f"+1{AREA_CODES[(index // 100) % len(AREA_CODES)]}55501{index % 100:02d}",
        timezone=tz,
        source=source,
        intent=intent,
        budget_band=band[0],
        budget=int(rng.uniform(band[1], band[2]) // 1000 * 1000),
        rate=min(0.5, params.activity_rate * s["rate"] * i["rate"] * spread[0]),
        dormancy=min(0.2, params.dormancy_hazard * s["dormancy"] * i["dormancy"] * spread[1]),
        revival=min(0.2, params.revival_hazard * s["revival"] * spread[2]),
        lost=min(0.2, params.lost_hazard * s["lost"] * spread[3]),
        conversion=min(0.2, params.conversion_hazard * s["conv"] * i["conv"] * spread[4]),
        responsiveness=s["resp"],
        email_bounces=rng.random() < params.email_bounce_rate,
        initial_state=DORMANT if rng.random() < params.initial_dormant_share else ACTIVE,
    )


class World:
    """Leads living hour by hour from `start`. `step()` plays one hour and returns what the
    leads did; `deliver()` tells the world a message reached a lead (its answer, if any,
    comes in the next `step()`). Everything is decided by the seed and by what was
    delivered when, so the same seed and the same deliveries give the same world."""

    def __init__(
        self, *, n_leads: int, seed: int, start: dt.datetime, params: WorldParams | None = None
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        self.seed = seed
        self.params = params or WorldParams()
        self.start = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.profiles = [lead_profile(seed, i, self.params) for i in range(n_leads)]
        self.state = bytearray(p.initial_state for p in self.profiles)
        # history[i][h]: the hidden state at the start of hour h (h counts from `start`).
        self.history = [bytearray() for _ in self.profiles]
        self.hour = 0
        self._rngs = [random.Random(f"life:{seed}:{i}") for i in range(n_leads)]
        self._reaction_rngs = [random.Random(f"react:{seed}:{i}") for i in range(n_leads)]
        self._zones = {name: ZoneInfo(name) for name, _ in TIMEZONES}
        self._pending: dict[int, list[Event]] = {}
        self.deliveries: list[Delivery] = []
        self._by_lead: dict[int, list[Delivery]] = {}
        self.responses = 0
        self.stops = 0
        self.stop_events: list[Event] = []

    # --- time ----------------------------------------------------------------------------
    def at(self, hour: int) -> dt.datetime:
        return self.start + dt.timedelta(hours=hour)

    def hour_of(self, when: dt.datetime) -> int:
        return int((when - self.start).total_seconds() // 3600)

    def local_hour(self, lead: int, hour: int) -> int:
        return self.at(hour).astimezone(self._zones[self.profiles[lead].timezone]).hour

    def emission(self, lead: int, hour: int) -> float:
        """Chance the lead, if active, does something in this hour."""
        return min(0.9, self.profiles[lead].rate * TIME_OF_DAY[self.local_hour(lead, hour)])

    # --- the world's hour ------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Play hour `self.hour`: first the answers to messages delivered in the previous
        tick, then each remaining lead's own life. Returns the hour's events."""
        h, events = self.hour, []
        for i, profile in enumerate(self.profiles):
            self.history[i].append(self.state[i])
            answered = self._pending.pop(i, None)
            if answered:
                events.extend(answered)
                if any(e.kind != SMS_INBOUND or e.body != "STOP" for e in answered):
                    # A real answer re-engages the lead; the answer is their hour's event.
                    if self.state[i] in (ACTIVE, DORMANT):
                        self.state[i] = ACTIVE
                    continue
            events.extend(self._live(i, profile, h))
        self.hour += 1
        return events

    def _minute(self, rng: random.Random, hour: int) -> dt.datetime:
        return self.at(hour) + dt.timedelta(seconds=rng.randrange(60, 3540))

    def _live(self, i: int, p: LeadProfile, h: int) -> list[Event]:
        rng, state = self._rngs[i], self.state[i]
        u = rng.random()
        if state == ACTIVE:
            e = self.emission(i, h)
            if u < e:
                kind = _pick(rng, ACTIVITY_MIX)
                return [self._event(i, kind, self._minute(rng, h), h)]
            if u < e + p.conversion:
                self.state[i] = CONVERTED
                at = self._minute(rng, h)
                return [
                    self._event(i, APPOINTMENT_BOOKED, at, h),
                    self._event(i, OPPORTUNITY_WON, at + dt.timedelta(seconds=30), h),
                ]
            if u < e + p.conversion + p.dormancy:
                self.state[i] = DORMANT
            return []
        if state == DORMANT:
            if u < p.revival:
                self.state[i] = ACTIVE
                kind = WEBSITE_VISIT if rng.random() < 0.5 else PROPERTY_VIEW
                return [self._event(i, kind, self._minute(rng, h), h)]
            if u < p.revival + p.lost:
                self.state[i] = LOST
                return [self._event(i, OPPORTUNITY_LOST, self._minute(rng, h), h)]
        return []

    def _event(self, i: int, kind: str, at: dt.datetime, h: int, **extra) -> Event:
        return Event(lead=i, kind=kind, at=at, event_id=f"{self._id_hour(i, h)}:{kind}", **extra)

    def _id_hour(self, lead: int, hour: int) -> str:
        # Absolute hours: the history and the run number their hours from different starts.
        return f"sim:{self.seed}:{lead}:{int(self.at(hour).timestamp()) // 3600}"

    def backfill(self, hours: int) -> list[Event]:
        """History before the run: plays `hours` hours ending at `start` and returns their
        events; the run's hour 0 then begins where the history ended."""
        saved_start = self.start
        self.start = saved_start - dt.timedelta(hours=hours)
        events: list[Event] = []
        for _ in range(hours):
            events.extend(self.step())
        self.start, self.hour = saved_start, 0
        self.history = [bytearray() for _ in self.profiles]
        return events

    # --- our messages ------------------------------------------------------------------------
    def deliver(
        self,
        *,
        lead: int,
        stage: int,
        channel: str,
        variant: str | None,
        message_ref: str = "",
    ) -> Reaction:
        """A message reached the world during the current tick (before hour `self.hour`
        is played). Decides at once whether it bounces, is opened, clicked, answered or
        STOPped; answers are events of the next hour."""
        p = self.profiles[lead]
        rng = self._reaction_rngs[lead]
        reaction = Reaction()
        if channel == "email" and p.email_bounces:
            reaction.bounced = True
            return reaction
        delivery = Delivery(lead, self.hour, stage, channel, variant, message_ref)
        self.deliveries.append(delivery)
        self._by_lead.setdefault(lead, []).append(delivery)
        alive = self.state[lead] in (ACTIVE, DORMANT)
        if channel == "email":
            reaction.opened = rng.random() < self.params.email_open_rate
            reaction.clicked = reaction.opened and rng.random() < self.params.email_click_rate
        if not alive:
            return reaction
        if rng.random() < self.params.effect(stage, channel, variant) * p.responsiveness:
            reaction.responded = True
            self.responses += 1
            kind = RESPONSE_KIND.get(channel, WEBSITE_VISIT)
            via = {"sms": "sms_reply", "email": "email_reply"}.get(channel, "api")
            when = self._minute(rng, self.hour)
            body = "Yes, still looking - can we talk this week?"
            self._pending.setdefault(lead, []).append(
                Event(
                    lead=lead,
                    kind=kind,
                    at=when,
                    event_id=f"{self._id_hour(lead, self.hour)}:answer:{channel}:{message_ref}",
                    via=via,
                    body=body,
                    detail={"answer_to": channel, "stage": stage},
                )
            )
        elif channel == "sms" and rng.random() < self.params.sms_opt_out_rate:
            reaction.stopped = True
            self.stops += 1
            stop = Event(
                lead=lead,
                kind=SMS_INBOUND,
                at=self._minute(rng, self.hour),
                event_id=f"{self._id_hour(lead, self.hour)}:stop:{message_ref}",
                via="sms_reply",
                body="STOP",
            )
            self.stop_events.append(stop)
            self._pending.setdefault(lead, []).append(stop)
        return reaction

    def deliveries_of(self, lead: int) -> list[Delivery]:
        return self._by_lead.get(lead, [])

    # --- the truth ----------------------------------------------------------------------------
    def success_probability(
        self,
        *,
        lead: int,
        start_hour: int,
        hours: int,
        deliveries: list[Delivery] | None = None,
    ) -> float:
        """The exact chance, under the world's own rules, that the lead re-engages or
        converts within hours [start_hour, start_hour + hours), starting from its hidden
        state at start_hour, given these deliveries (none: the held-out counterfactual).

        A dynamic program over the two live states, hour by hour, with the same partition
        of each hour's uniform draw that `step` uses: no sampling error. A STOP is not
        counted as re-engagement here (it is not one in the world)."""
        p = self.profiles[lead]
        if start_hour >= len(self.history[lead]):
            return float("nan")
        state = self.history[lead][start_hour]
        if state not in (ACTIVE, DORMANT):
            return 0.0
        a, d = (1.0, 0.0) if state == ACTIVE else (0.0, 1.0)
        answer_at: dict[int, float] = {}
        for delivery in deliveries or []:
            # Answers to a delivery seen before hour h is played happen in hour h.
            miss = answer_at.get(delivery.hour, 1.0)
            chance = self.params.effect(delivery.stage, delivery.channel, delivery.variant)
            answer_at[delivery.hour] = miss * (1.0 - chance * p.responsiveness)
        success = 0.0
        for h in range(start_hour, start_hour + hours):
            if h in answer_at:
                answered = 1.0 - answer_at[h]
                success += (a + d) * answered
                a, d = a * (1 - answered), d * (1 - answered)
            e = self.emission(lead, h)
            conv = min(p.conversion, max(0.0, 1 - e))
            dorm = min(p.dormancy, max(0.0, 1 - e - conv))
            success += a * (e * REENGAGE_SHARE + conv) + d * p.revival
            a, d = (
                a * (1 - e - conv - dorm) + a * e * (1 - REENGAGE_SHARE),
                d * (1 - p.revival - p.lost) + a * dorm,
            )
        return success

    def hidden_state(self, lead: int, hour: int | None = None) -> int:
        if hour is None:
            return self.state[lead]
        return self.history[lead][hour]
