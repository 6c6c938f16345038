"""The versioned feature list: raw SQL columns in, a named numeric matrix out (no ORM)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FEATURE_VERSION = "f1"
LOOKBACK_DAYS = 120  # recency is capped here: "not in the last 120 days"
WINDOWS = (7, 14, 30, 90)

# Activity kinds grouped into the families an agent reasons about. Sixteen kinds one by
# one would make sparse, noisy columns; the families keep each signal dense.
KIND_FAMILY: dict[str, str] = {
    "email_open": "email_open",
    "email_click": "email_click",
    "email_reply": "reply",
    "sms_inbound": "reply",
    "call_inbound": "reply",
    "website_visit": "web",
    "property_view": "web",
    "form_submit": "web",
    "appointment_booked": "appointment",
    "showing_attended": "appointment",
    "appointment_cancelled": "cancellation",
    "email_outbound": "outbound",
    "sms_outbound": "outbound",
    "call_outbound": "outbound",
}
FAMILIES = ("email_open", "email_click", "reply", "web", "appointment", "cancellation", "outbound")
INBOUND_KINDS = tuple(k for k, f in KIND_FAMILY.items() if f not in ("outbound",))
REPLY_KINDS = ("email_reply", "sms_inbound", "call_inbound", "form_submit")
OUTBOUND_KINDS = ("email_outbound", "sms_outbound", "call_outbound")

# The columns the feature SQL returns after (lead_id, stage, source, agent_id), in order.
RAW_COLUMNS: tuple[str, ...] = (
    "lead_age_days",
    *(f"days_since_{f}" for f in FAMILIES),
    *(f"n{w}_{f}" for f in FAMILIES for w in WINDOWS),
    "days_since_inbound",
    "inbound_last14",
    "inbound_prev14",
    "inbound_baseline",
    "email_open_prev14",
    "inbound_30d",
    "outbound_30d",
    "unanswered_outbound",
    "median_reply_latency_hours",
    "interventions_90d",
    "interventions_no_response_90d",
    "interventions_re_engaged_90d",
    "days_since_intervention",
)

# Behavioural features the model sees, in order; the one-hot stage/source columns follow.
NUMERIC_FEATURES: tuple[str, ...] = (
    *RAW_COLUMNS,
    "engagement_trend",
    "engagement_vs_baseline",
    "email_open_trend",
    "inbound_outbound_ratio_30d",
    "agent_response_hours",
)
BASELINE_DAYS = 76  # inbound_baseline counts days 15..90 before the snapshot

LATENCY_CAP_HOURS = 24.0 * 30  # a touch never answered counts as a month's wait

# Features whose effect on churn has a known direction: +1 more = riskier, -1 less =
# riskier. Both models are held to them (sign bounds for the logistic regression,
# monotonic constraints for the boosted trees), so that more engagement never raises a
# score, a longer silence never lowers it, and reasons read true.
_INBOUND_FAMILIES = ("email_open", "email_click", "reply", "web", "appointment")
MONOTONIC: dict[str, int] = {
    **{f"days_since_{f}": 1 for f in _INBOUND_FAMILIES},
    **{f"n{w}_{f}": -1 for f in _INBOUND_FAMILIES for w in WINDOWS},
    **{f"n{w}_cancellation": 1 for w in WINDOWS},
    "days_since_inbound": 1,
    "inbound_last14": -1,
    "inbound_prev14": -1,
    "inbound_baseline": -1,
    "email_open_prev14": -1,
    "inbound_30d": -1,
    "unanswered_outbound": 1,
    "median_reply_latency_hours": 1,
    "engagement_trend": -1,
    "engagement_vs_baseline": -1,
    "email_open_trend": -1,
    "inbound_outbound_ratio_30d": -1,
    "agent_response_hours": 1,
    "interventions_no_response_90d": 1,
    "interventions_re_engaged_90d": -1,
}


@dataclass(frozen=True)
class FeatureSpec:
    """The exact columns a model was trained on; stored inside its artifact."""

    version: str = FEATURE_VERSION
    stages: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    agent_hours_fill: float = 24.0

    @functools.cached_property
    def names(self) -> list[str]:  # computed once per spec (read-only by convention)
        return [
            *NUMERIC_FEATURES,
            *(f"stage={s}" for s in self.stages),
            *(f"source={s}" for s in self.sources),
        ]

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass
class RawFeatures:
    """Feature SQL output for a set of leads at one as-of instant."""

    lead_ids: np.ndarray  # int64 (n,)
    stages: list[str]
    sources: list[str]
    agent_ids: list[int | None]
    raw: np.ndarray  # float64 (n, len(RAW_COLUMNS)), NaN where SQL returned NULL
    agent_hours: np.ndarray = field(
        default_factory=lambda: np.zeros(0)
    )  # float64 (n,), NaN if unknown

    def __len__(self) -> int:
        return len(self.lead_ids)

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence], agent_response_hours: dict[str, float] | None = None
    ) -> RawFeatures:
        hours = agent_response_hours or {}
        n = len(rows)
        raw = np.array([r[4:] for r in rows], dtype=np.float64).reshape(n, len(RAW_COLUMNS))
        agents = [r[3] for r in rows]
        return cls(
            lead_ids=np.array([r[0] for r in rows], dtype=np.int64),
            stages=[r[1] or "" for r in rows],
            sources=[r[2] or "" for r in rows],
            agent_ids=agents,
            raw=raw,
            agent_hours=np.array(
                [hours.get(str(a), np.nan) if a is not None else np.nan for a in agents],
                dtype=np.float64,
            ),
        )

    @classmethod
    def from_arrays(
        cls,
        *,
        lead_ids: np.ndarray,
        stages: list[str],
        sources: list[str],
        agent_ids: list,
        raw: np.ndarray,
        agent_response_hours: dict[str, float] | None = None,
    ) -> RawFeatures:
        hours = agent_response_hours or {}
        return cls(
            lead_ids=lead_ids,
            stages=stages,
            sources=sources,
            agent_ids=agent_ids,
            raw=raw,
            agent_hours=np.array(
                [hours.get(str(a), np.nan) if a is not None else np.nan for a in agent_ids],
                dtype=np.float64,
            ),
        )

    def take(self, mask: np.ndarray) -> RawFeatures:
        idx = np.flatnonzero(mask)
        return RawFeatures(
            lead_ids=self.lead_ids[idx],
            stages=[self.stages[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            agent_ids=[self.agent_ids[i] for i in idx],
            raw=self.raw[idx],
            agent_hours=self.agent_hours[idx],
        )

    @staticmethod
    def concat(parts: Sequence[RawFeatures]) -> RawFeatures:
        return RawFeatures(
            lead_ids=np.concatenate([p.lead_ids for p in parts]),
            stages=[s for p in parts for s in p.stages],
            sources=[s for p in parts for s in p.sources],
            agent_ids=[a for p in parts for a in p.agent_ids],
            raw=np.vstack([p.raw for p in parts]),
            agent_hours=np.concatenate([p.agent_hours for p in parts]),
        )


def spec_fit(raw: RawFeatures, *, max_categories: int = 12) -> FeatureSpec:
    """The spec for a training set: its most frequent stages and sources become columns."""

    def top(values: list[str]) -> tuple[str, ...]:
        counts: dict[str, int] = {}
        for v in values:
            if v:
                counts[v] = counts.get(v, 0) + 1
        return tuple(sorted(sorted(counts), key=lambda v: -counts[v])[:max_categories])

    known = raw.agent_hours[~np.isnan(raw.agent_hours)]
    return FeatureSpec(
        stages=top(raw.stages),
        sources=top(raw.sources),
        agent_hours_fill=float(np.median(known)) if known.size else 24.0,
    )


_RAW_POSITION = {name: i for i, name in enumerate(RAW_COLUMNS)}
_RECENCY = np.array([i for i, n in enumerate(RAW_COLUMNS) if n.startswith("days_since_")])
_LATENCY = RAW_COLUMNS.index("median_reply_latency_hours")


def vectorize(raw: RawFeatures, spec: FeatureSpec) -> np.ndarray:
    """The model matrix, columns in `spec.names` order."""
    col = _RAW_POSITION
    r = raw.raw.copy()
    # NULLs from SQL mean "none in the lookback window": counts 0, recency capped.
    r[:, _RECENCY] = np.fmin(r[:, _RECENCY], LOOKBACK_DAYS)  # fmin: NaN -> the cap
    r[:, _LATENCY] = np.where(np.isnan(r[:, _LATENCY]), LATENCY_CAP_HOURS, r[:, _LATENCY])
    r[np.isnan(r)] = 0.0
    r[:, col["lead_age_days"]] = np.maximum(r[:, col["lead_age_days"]], 0.0)
    last14, prev14 = r[:, col["inbound_last14"]], r[:, col["inbound_prev14"]]
    opens14, opens_prev = r[:, col["n14_email_open"]], r[:, col["email_open_prev14"]]
    derived = np.column_stack(
        [
            np.log((last14 + 1.0) / (prev14 + 1.0)),
            # Against the lead's own usual level, so a silence that outlasts the previous
            # two weeks still reads as a fall rather than as "steady at zero".
            np.log((last14 + 1.0) / (r[:, col["inbound_baseline"]] * 14.0 / BASELINE_DAYS + 1.0)),
            np.log((opens14 + 1.0) / (opens_prev + 1.0)),
            np.log((r[:, col["inbound_30d"]] + 1.0) / (r[:, col["outbound_30d"]] + 1.0)),
            np.where(np.isnan(raw.agent_hours), spec.agent_hours_fill, raw.agent_hours),
        ]
    )
    n = len(raw)
    stage_block = np.zeros((n, len(spec.stages)))
    source_block = np.zeros((n, len(spec.sources)))
    stage_pos = {s: i for i, s in enumerate(spec.stages)}
    source_pos = {s: i for i, s in enumerate(spec.sources)}
    for row, (stage, source) in enumerate(zip(raw.stages, raw.sources, strict=True)):
        if stage in stage_pos:
            stage_block[row, stage_pos[stage]] = 1.0
        if source in source_pos:
            source_block[row, source_pos[source]] = 1.0
    return np.hstack([r, derived, stage_block, source_block])


# --- Reasons: factor groups, their "normal", and their words ---------------------------


@dataclass(frozen=True)
class FactorGroup:
    key: str
    features: tuple[str, ...]  # exact names, or a prefix ending in "=" for one-hot blocks
    # The feature that must sit on its risky side of normal for the group to be named.
    lead_feature: str | None = None
    risky_direction: int = 1


FACTOR_GROUPS: tuple[FactorGroup, ...] = (
    FactorGroup(
        "replies", ("days_since_reply", *(f"n{w}_reply" for w in WINDOWS)), "days_since_reply"
    ),
    FactorGroup(
        "email_engagement",
        (
            "days_since_email_open",
            *(f"n{w}_email_open" for w in WINDOWS),
            "email_open_prev14",
            "email_open_trend",
            "days_since_email_click",
            *(f"n{w}_email_click" for w in WINDOWS),
        ),
        "email_open_trend",
        -1,
    ),
    FactorGroup("web", ("days_since_web", *(f"n{w}_web" for w in WINDOWS)), "days_since_web"),
    FactorGroup(
        "engagement_trend",
        (
            "engagement_trend",
            "engagement_vs_baseline",
            "inbound_last14",
            "inbound_prev14",
            "inbound_baseline",
            "days_since_inbound",
        ),
        "engagement_trend",
        -1,
    ),
    FactorGroup(
        "unanswered",
        (
            "unanswered_outbound",
            "median_reply_latency_hours",
            "inbound_outbound_ratio_30d",
            "inbound_30d",
        ),
        "unanswered_outbound",
    ),
    FactorGroup(
        "appointments",
        (
            "days_since_appointment",
            *(f"n{w}_appointment" for w in WINDOWS),
            "days_since_cancellation",
            *(f"n{w}_cancellation" for w in WINDOWS),
        ),
        "days_since_appointment",
    ),
    FactorGroup(
        "outreach", ("days_since_outbound", *(f"n{w}_outbound" for w in WINDOWS), "outbound_30d")
    ),
    FactorGroup("agent", ("agent_response_hours",), "agent_response_hours"),
    FactorGroup(
        "interventions",
        (
            "interventions_90d",
            "interventions_no_response_90d",
            "interventions_re_engaged_90d",
            "days_since_intervention",
        ),
        "interventions_no_response_90d",
    ),
    FactorGroup("lead_age", ("lead_age_days",)),
    FactorGroup("stage", ("stage=",)),
    FactorGroup("source", ("source=",)),
)


def group_columns(spec: FeatureSpec) -> dict[str, np.ndarray]:
    return _group_columns(tuple(spec.names))


@functools.lru_cache(maxsize=64)
def _group_columns(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for group in FACTOR_GROUPS:
        idx = [
            i
            for i, name in enumerate(names)
            if name in group.features
            or any(p.endswith("=") and name.startswith(p) for p in group.features)
        ]
        if idx:
            out[group.key] = np.array(idx, dtype=np.int64)
    return out


def reference_fit(X: np.ndarray, y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """ "Normal" for each column: the median of leads that did not churn (the mode's
    one-hot for stage and source, so "normal" is a real category)."""
    keep = X[y == 0] if (y == 0).any() else X
    ref = np.median(keep, axis=0)
    names = spec.names
    for prefix in ("stage=", "source="):
        idx = [i for i, n in enumerate(names) if n.startswith(prefix)]
        if idx:
            block = keep[:, idx]
            ref[idx] = 0.0
            if block.sum() > 0:
                ref[idx[int(block.sum(axis=0).argmax())]] = 1.0
    return ref


def _pct_drop(now: float, before: float) -> int:
    return int(round(100.0 * (before - now) / before)) if before > 0 else 0


@functools.lru_cache(maxsize=64)
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def factor_words(key: str, x: np.ndarray, spec: FeatureSpec) -> str:
    """Plain words an agent can act on, from the lead's own values."""
    names = spec.names
    position = _positions(tuple(names))

    def v(name: str) -> float:
        return float(x[position[name]])

    def days(name: str) -> str:
        d = v(name)
        return f"over {LOOKBACK_DAYS} days" if d >= LOOKBACK_DAYS else f"{int(d)} days"

    if key == "replies":
        if v("n30_reply") == 0 or v("days_since_reply") >= 7:
            return f"no reply in {days('days_since_reply')}"
        return f"only {int(v('n30_reply'))} replies in the last 30 days"
    if key == "email_engagement":
        before, now = v("email_open_prev14"), v("n14_email_open")
        if before > 0 and now < before:
            return f"email opens down {_pct_drop(now, before)}% against the previous two weeks"
        return f"no email opened in {days('days_since_email_open')}"
    if key == "web":
        return f"no website or property views in {days('days_since_web')}"
    if key == "engagement_trend":
        before, now = v("inbound_prev14"), v("inbound_last14")
        usual = v("inbound_baseline") * 14.0 / BASELINE_DAYS
        if before > 0 and now < before:
            return f"activity down {_pct_drop(now, before)}% against the previous two weeks"
        if usual > 0 and now < usual:
            return f"activity down {_pct_drop(now, usual)}% against its usual two weeks"
        return f"no activity at all in {days('days_since_inbound')}"
    if key == "unanswered":
        n = int(v("unanswered_outbound"))
        if n > 0:
            return f"{n} outreach touches unanswered since the last reply"
        return f"replies take {int(v('median_reply_latency_hours'))} hours on median"
    if key == "appointments":
        if v("n30_cancellation") > 0:
            return f"cancelled an appointment {days('days_since_cancellation')} ago"
        return f"no appointment or showing in {days('days_since_appointment')}"
    if key == "outreach":
        if v("n14_outbound") == 0:
            return f"no outreach from the agent in {days('days_since_outbound')}"
        return f"{int(v('n14_outbound'))} outreach touches in 14 days without a response"
    if key == "agent":
        return f"assigned agent answers in {int(v('agent_response_hours'))} hours on median"
    if key == "interventions":
        n = int(v("interventions_no_response_90d"))
        return f"{n} earlier interventions got no response" if n else "recent intervention"
    if key == "lead_age":
        return f"lead is {int(v('lead_age_days'))} days old"
    if key in ("stage", "source"):
        values = spec.stages if key == "stage" else spec.sources
        hot = [s for s in values if x[position[f"{key}={s}"]] == 1.0]
        label = "pipeline stage" if key == "stage" else "lead source"
        return f"{label} '{hot[0]}' churns more often" if hot else f"{label} not seen in training"
    raise KeyError(key)
