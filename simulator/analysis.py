"""What a run measured (from the system's rows) next to what the world knows is true."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from django.db.models import Count

from churnapp.models import Lead, LeadActivity, LeadStatus
from interventions.models import Intervention, InterventionStatus, LeadCohort, Outcome, StagePolicy
from notifications.models import Message, MessageStatus
from simulator import pipeline
from simulator.world import ACTIVE, DORMANT, LOST

Z95 = 1.959963984540054
SUCCESS = (Outcome.RE_ENGAGED, Outcome.CONVERTED)
# What one send costs the brokerage: provider fees, and the agent's time for a call.
UNIT_COST: dict[str, Decimal] = {
    "sms": Decimal("0.0079"),
    "email": Decimal("0.0010"),
    "ghl_workflow": Decimal("0.0100"),
    "ghl_task": Decimal("4.00"),
    "agent_alert": Decimal("6.00"),
}
SENT_STATUSES = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
    MessageStatus.REPLIED,
    MessageStatus.BOUNCED,
)


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def diff_interval(k1: int, n1: int, k0: int, n0: int) -> tuple[float, float, float]:
    """p1 - p0 with Newcombe's hybrid score 95% interval (from two Wilson intervals)."""
    if not n1 or not n0:
        return (math.nan, math.nan, math.nan)
    p1, p0 = k1 / n1, k0 / n0
    l1, u1 = wilson(k1, n1)
    l0, u0 = wilson(k0, n0)
    d = p1 - p0
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )


@dataclass
class Arm:
    n: int = 0
    successes: int = 0
    true_sum: float = 0.0  # sum of each intervention's true success probability
    true_var: float = 0.0  # sum of p(1 - p): the variance of the count under the truth

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    @property
    def true_rate(self) -> float:
        return self.true_sum / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)

    @property
    def z(self) -> float:
        """How many standard errors the measured count is from the true expectation."""
        return (self.successes - self.true_sum) / math.sqrt(self.true_var) if self.true_var else 0.0


@dataclass
class StageResult:
    stage: int
    target: float
    window_hours: int
    treated: Arm = field(default_factory=Arm)
    holdout: Arm = field(default_factory=Arm)
    true_effect_sum: float = 0.0  # sum over treated of p_treated - p_untreated
    truncated: int = 0

    @property
    def lift(self) -> tuple[float, float, float]:
        return diff_interval(
            self.treated.successes, self.treated.n, self.holdout.successes, self.holdout.n
        )

    @property
    def true_lift(self) -> float:
        return self.true_effect_sum / self.treated.n if self.treated.n else math.nan

    @property
    def covers(self) -> bool:
        d, lo, hi = self.lift
        return lo <= self.true_lift <= hi


@dataclass
class Report:
    leads: int
    days: int
    seed: int
    holdout_percent: float
    runtime_seconds: float
    stages: dict[int, StageResult]
    churn: dict[str, dict]
    model: dict
    money: dict
    volumes: dict
    tracking: dict | None
    stops_counted_as_success: int
    errors: list[str]

    def as_dict(self) -> dict:
        out = asdict(self)
        for stage, result in self.stages.items():
            d, lo, hi = result.lift
            out["stages"][stage].update(
                measured_lift=d,
                lift_low=lo,
                lift_high=hi,
                true_lift=result.true_lift,
                covers=result.covers,
                treated_rate=result.treated.rate,
                treated_true_rate=result.treated.true_rate,
                treated_z=result.treated.z,
                holdout_rate=result.holdout.rate,
                holdout_true_rate=result.holdout.true_rate,
                holdout_z=result.holdout.z,
            )
        return out


def _auc(scores: list[float], labels: list[bool]) -> float:
    pairs = sorted(zip(scores, labels, strict=True))
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2
        rank_sum += avg_rank * sum(1 for _, label in pairs[i:j] if label)
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def report_build(sim) -> Report:
    """Read the system's rows for the simulated tenant and score them against the world."""
    world, tenant = sim.world, sim.tenant
    prefix = f"sim-{sim.config.seed}-"
    windows = {
        (sp.policy_id, sp.stage): sp for sp in StagePolicy.objects.filter(policy__tenant=tenant)
    }
    stages: dict[int, StageResult] = {}
    stops_counted = 0
    stop_leads = {e.lead for e in world.stop_events}
    rows = (
        Intervention.objects.filter(tenant=tenant, status=InterventionStatus.RESOLVED)
        .exclude(outcome=Outcome.CANCELLED)
        .select_related("lead", "variant")
        .order_by("id")
    )
    for iv in rows:
        if not iv.lead.external_id.startswith(prefix):
            continue
        lead = int(iv.lead.external_id[len(prefix) :])
        sp = windows[(iv.policy_id, iv.stage)]
        result = stages.setdefault(
            iv.stage,
            StageResult(iv.stage, float(sp.success_target), sp.response_window_hours),
        )
        start = world.hour_of(iv.planned_at)
        hours = sp.response_window_hours
        success = iv.outcome in SUCCESS
        if not success and iv.resolved_at < iv.window_ends_at:
            # Ended early (risk rose to the next stage, or an opt-out): judged on its span.
            hours = max(1, math.ceil((iv.resolved_at - iv.planned_at).total_seconds() / 3600))
            result.truncated += 1
        if start < 0 or start + hours > world.hour:
            continue  # the window is not wholly inside the simulated span
        untreated = world.success_probability(lead=lead, start_hour=start, hours=hours)
        if iv.is_holdout:
            arm, p = result.holdout, untreated
        else:
            got = [d for d in world.deliveries_of(lead) if start <= d.hour < start + hours]
            p = world.success_probability(lead=lead, start_hour=start, hours=hours, deliveries=got)
            arm = result.treated
            result.true_effect_sum += p - untreated
        arm.n += 1
        arm.successes += int(success)
        arm.true_sum += p
        arm.true_var += p * (1 - p)
        if success and lead in stop_leads and iv.outcome == Outcome.RE_ENGAGED:
            stops_counted += int(
                any(
                    start <= world.hour_of(e.at) < start + hours
                    for e in world.stop_events
                    if e.lead == lead
                )
            )

    # Churn by arm, per lead: lost in the system by the end of the run.
    churn: dict[str, dict] = {}
    cohorts = LeadCohort.objects.filter(tenant=tenant).select_related("lead")
    arms = {"treated": [0, 0, 0], "holdout": [0, 0, 0]}  # n, churned, world-lost
    for cohort in cohorts:
        key = "holdout" if cohort.is_holdout else "treated"
        arms[key][0] += 1
        arms[key][1] += int(cohort.lead.status == LeadStatus.LOST)
        ext = cohort.lead.external_id
        if ext.startswith(prefix):
            arms[key][2] += int(world.hidden_state(int(ext[len(prefix) :])) == LOST)
    for key, (n, k, world_lost) in arms.items():
        lo, hi = wilson(k, n)
        churn[key] = {"n": n, "churned": k, "rate": k / n if n else math.nan, "low": lo, "high": hi}
        churn[key]["world_lost"] = world_lost
    d, lo, hi = diff_interval(
        arms["treated"][1], arms["treated"][0], arms["holdout"][1], arms["holdout"][0]
    )
    churn["difference"] = {"value": d, "low": lo, "high": hi}

    # The model: the system's scores at the end against the world's hidden state.
    info = pipeline.model_info(tenant=tenant)
    scores, labels = [], []
    for ext, score in Lead.objects.filter(
        tenant=tenant, status=LeadStatus.ACTIVE, risk_score__isnull=False
    ).values_list("external_id", "risk_score"):
        if ext.startswith(prefix):
            state = world.hidden_state(int(ext[len(prefix) :]))
            if state in (ACTIVE, DORMANT):
                scores.append(score)
                labels.append(state == DORMANT)
    model = {
        "version": info.version,
        "algorithm": info.algorithm,
        "recorded_metrics": info.metrics,
        "auc_vs_hidden_dormancy": _auc(scores, labels),
        "scored_leads": len(scores),
        "dormant_share": (sum(labels) / len(labels)) if labels else math.nan,
    }

    # Money: saves beyond the holdout rate, at the tenant's value of a kept lead.
    value = tenant.saved_lead_value
    sent = dict(
        Message.objects.filter(tenant=tenant, status__in=SENT_STATUSES)
        .values_list("channel")
        .annotate(n=Count("id"))
        .values_list("channel", "n")
    )
    cost = sum((UNIT_COST.get(ch, Decimal("0")) * n for ch, n in sent.items()), Decimal("0"))
    measured_saves = sum(
        (r.lift[0] * r.treated.n) for r in stages.values() if r.treated.n and r.holdout.n
    )
    true_saves = sum(r.true_effect_sum for r in stages.values())
    money = {
        "saved_lead_value": float(value),
        "cost": float(cost),
        "messages_sent": sent,
        "measured_saves": measured_saves,
        "true_saves": true_saves,
        "revenue_protected": measured_saves * float(value),
        "true_revenue_protected": true_saves * float(value),
        "roi": (measured_saves * float(value) - float(cost)) / float(cost) if cost else math.nan,
        "true_roi": (true_saves * float(value) - float(cost)) / float(cost) if cost else math.nan,
    }
    volumes = {
        "activities": LeadActivity.objects.filter(tenant_id=tenant.id).count(),
        "interventions": Intervention.objects.filter(tenant=tenant).count(),
        "messages": Message.objects.filter(tenant=tenant).count(),
        "deliveries_seen_by_world": len(world.deliveries),
        "world_answers": world.responses,
        "world_stops": world.stops,
        "api_requests": sim.counters.api_requests,
        "activities_posted": sim.counters.activities_posted,
        "webhooks_posted": sim.counters.webhooks_posted,
        "tracking_hits": sim.counters.tracking_hits,
        "tasks_run": sim.worker.stats.executed,
        "tasks_failed": sim.worker.stats.failed,
        "ticks": sim.ticks,
    }
    tracking = pipeline.tracking_impact(
        tenant=tenant, since=world.at(0), until=world.at(world.hour)
    )
    return Report(
        leads=sim.config.leads,
        days=sim.config.days,
        seed=sim.config.seed,
        holdout_percent=float(sim.config.holdout_percent),
        runtime_seconds=sim.runtime_seconds,
        stages=dict(sorted(stages.items())),
        churn=churn,
        model=model,
        money=money,
        volumes=volumes,
        tracking=tracking,
        stops_counted_as_success=stops_counted,
        errors=sim.counters.http_errors + sim.worker.stats.failures,
    )
