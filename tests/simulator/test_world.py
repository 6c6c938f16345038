"""The world alone: determinism from the seed, its vocabulary, and its truth against its own behaviour."""

from __future__ import annotations

import datetime as dt
import functools
import math
from zoneinfo import ZoneInfo

from churnapp.models import KIND_DIRECTION, ActivityKind
from simulator.world import (
    ACTIVITY_MIX,
    DEFAULT_EFFECTS,
    RESPONSE_KIND,
    SOURCES,
    TIMEZONES,
    World,
    WorldParams,
)

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def _play(seed: int, n: int = 60, hours: int = 24 * 5) -> list:
    world = World(n_leads=n, seed=seed, start=START)
    events = world.backfill(24 * 3)
    for h in range(hours):
        events += world.step()
        if h % 24 == 10:  # the same deliveries at the same moments
            for lead in range(0, n, 7):
                world.deliver(lead=lead, stage=1, channel="email", variant="A", message_ref=f"{h}")
    return [(e.lead, e.kind, e.at, e.event_id, e.via, e.body) for e in events], world


def test_same_seed_same_world():
    events_a, world_a = _play(11)
    events_b, world_b = _play(11)
    assert events_a == events_b
    assert world_a.profiles == world_b.profiles
    assert world_a.history == world_b.history
    assert len(events_a) > 100


def test_other_seed_other_world():
    events_a, world_a = _play(11)
    events_c, world_c = _play(12)
    assert events_a != events_c
    assert [p.source for p in world_a.profiles] != [p.source for p in world_c.profiles]


def test_kinds_and_answers_speak_churnapps_vocabulary():
    _events, world = _play(5, n=200, hours=24 * 10)
    kinds = {kind for kind, _ in ACTIVITY_MIX} | set(RESPONSE_KIND.values())
    kinds |= {"appointment_booked", "opportunity_won", "opportunity_lost"}
    assert kinds <= set(ActivityKind.values)
    assert set(KIND_DIRECTION) == set(ActivityKind.values)
    events, _ = _play(5, n=200, hours=24 * 10)
    assert {kind for _, kind, *_ in events} <= set(ActivityKind.values)
    assert len({e[3] for e in events}) == len(events), "event ids are unique"


def test_population_mixes_sources_time_zones_and_states():
    world = World(n_leads=2000, seed=3, start=START)
    sources = {p.source for p in world.profiles}
    zones = {p.timezone for p in world.profiles}
    assert sources == set(SOURCES)
    assert zones == {name for name, _ in TIMEZONES}
    share = sum(p.source == "zillow" for p in world.profiles) / 2000
    assert abs(share - SOURCES["zillow"]["weight"]) < 0.05
    assert {p.initial_state for p in world.profiles} == {0, 1}
    assert 0 < sum(p.email_bounces for p in world.profiles) < 200


def test_activity_follows_the_time_of_day():
    world = World(n_leads=400, seed=4, start=START)
    events = []
    for _ in range(24 * 7):
        events += world.step()
    local = [e.at.astimezone(ZoneInfo(world.profiles[e.lead].timezone)).hour for e in events]
    night = sum(1 for h in local if 1 <= h <= 5)
    evening = sum(1 for h in local if 17 <= h <= 21)
    assert evening > 8 * night


def test_stage3_agent_call_is_stronger_than_stage1_email():
    params = WorldParams()
    assert params.effect(3, "agent_alert", "A") > 1.5 * params.effect(1, "email", "A")
    assert params.effect(1, "email", "B") > params.effect(1, "email", "A")
    assert all(0 < v < 1 for v in DEFAULT_EFFECTS.values())


@functools.cache
def _empirical_vs_truth(deliver: bool) -> tuple[int, float, float]:
    """Play many leads through one 72 h window and compare the count that re-engaged
    with the sum of the world's exact success probabilities."""
    n, hours = 2000, 72
    world = World(n_leads=n, seed=21, start=START)
    world.backfill(24 * 5)
    truth, variance = 0.0, 0.0
    deliveries: dict[int, list] = {}
    if deliver:
        for lead in range(n):
            world.deliver(lead=lead, stage=1, channel="sms", variant="A", message_ref="x")
        deliveries = {lead: world.deliveries_of(lead) for lead in range(n)}
    events = []
    for _ in range(hours):
        events += world.step()
    success_kinds = {k for k, _ in ACTIVITY_MIX if k != "email_open"} | {"appointment_booked"}
    succeeded = {e.lead for e in events if e.kind in success_kinds and e.body != "STOP"}
    for lead in range(n):
        p = world.success_probability(
            lead=lead, start_hour=0, hours=hours, deliveries=deliveries.get(lead, [])
        )
        truth += p
        variance += p * (1 - p)
    return len(succeeded), truth, math.sqrt(variance)


def test_truth_matches_the_worlds_behaviour_untreated():
    count, expected, sd = _empirical_vs_truth(deliver=False)
    assert abs(count - expected) < 4 * sd, (count, expected, sd)


def test_truth_matches_the_worlds_behaviour_treated():
    count, expected, sd = _empirical_vs_truth(deliver=True)
    _untreated, base, _ = _empirical_vs_truth(deliver=False)
    assert abs(count - expected) < 4 * sd, (count, expected, sd)
    assert expected > base + 0.1 * 2000  # the SMS has a real effect


def test_deliveries_to_bouncing_addresses_do_not_arrive():
    world = World(n_leads=500, seed=8, start=START)
    bouncing = [p.index for p in world.profiles if p.email_bounces]
    assert bouncing
    reaction = world.deliver(lead=bouncing[0], stage=1, channel="email", variant="A")
    assert reaction.bounced and not reaction.responded
    assert world.deliveries_of(bouncing[0]) == []
