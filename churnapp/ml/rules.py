"""rules-v1: a transparent scorer for tenants without enough labelled history (no ORM)."""

from __future__ import annotations

import numpy as np

from churnapp.ml.features import FeatureSpec
from churnapp.ml.model import Scorer

RULES_VERSION = "rules-v1"

# log-odds points per unit of each feature, capped where the effect saturates. Read as:
# every day without a reply adds 0.09, up to 45 days; a halving of activity against the
# previous two weeks adds ~0.5; each unanswered touch 0.25, up to 6.
WEIGHTS: dict[str, tuple[float, float]] = {
    "days_since_reply": (0.09, 45.0),
    "days_since_inbound": (0.05, 30.0),
    "unanswered_outbound": (0.25, 6.0),
    "n30_cancellation": (0.6, 2.0),
    "interventions_no_response_90d": (0.4, 3.0),
}
TREND_WEIGHT = -0.7  # engagement_trend is a log ratio; falling activity raises risk
REPLY_CREDIT = (-0.15, 10.0)  # replies in the last 30 days lower risk
INTERCEPT = -3.0

# What "normal" looks like for the rules: an engaged lead of a healthy pipeline.
REFERENCE: dict[str, float] = {
    "days_since_reply": 3.0,
    "days_since_inbound": 1.0,
    "unanswered_outbound": 0.0,
    "n30_cancellation": 0.0,
    "interventions_no_response_90d": 0.0,
    "engagement_trend": 0.0,
    "n30_reply": 4.0,
}


class RulesScorer(Scorer):
    algorithm = "rules"

    def __init__(self) -> None:
        self.version = RULES_VERSION
        self.spec = FeatureSpec()
        names = self.spec.names
        self._idx = {
            name: names.index(name) for name in (*WEIGHTS, "engagement_trend", "n30_reply")
        }
        # Columns the rules ignore are "normal" at any value: their reference is the
        # lead's own value, which the explainer never names.
        self.reference = np.full(len(names), np.nan)
        for name, value in REFERENCE.items():
            self.reference[names.index(name)] = value

    def _reference_for(self, X: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(self.reference), X, self.reference)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = np.full(len(X), INTERCEPT)
        for name, (weight, cap) in WEIGHTS.items():
            z += weight * np.minimum(X[:, self._idx[name]], cap)
        z += TREND_WEIGHT * np.clip(X[:, self._idx["engagement_trend"]], -3.0, 3.0)
        z += REPLY_CREDIT[0] * np.minimum(X[:, self._idx["n30_reply"]], REPLY_CREDIT[1])
        return 1.0 / (1.0 + np.exp(-z))
