"""Pure model code: features, rules scorer, reasons, artifacts (no database)."""

import datetime as dt
import hashlib

import numpy as np
import pytest

from churnapp.ml import features as F
from churnapp.ml.model import (
    ModelLoadError,
    TrainedScorer,
    artifact_dump,
    artifact_load,
    calibration_table,
    metrics_compute,
    reasons_explain,
    time_split,
)
from churnapp.ml.rules import RULES_VERSION, RulesScorer
from churnapp.ml.synthetic import history_generate


def _raw(**values) -> F.RawFeatures:
    row = [1, "new", "zillow", None] + [values.get(c) for c in F.RAW_COLUMNS]
    return F.RawFeatures.from_rows([row])


def test_vectorize_fills_nulls_as_none_seen_and_derives_trends():
    raw = _raw(
        lead_age_days=40, inbound_last14=1, inbound_prev14=9, n14_email_open=2, email_open_prev14=10
    )
    spec = F.FeatureSpec(stages=("new",), sources=("zillow", "referral"))
    x = F.vectorize(raw, spec)[0]
    names = spec.names
    assert x[names.index("days_since_reply")] == F.LOOKBACK_DAYS  # no reply seen
    assert x[names.index("n30_reply")] == 0
    assert x[names.index("median_reply_latency_hours")] == F.LATENCY_CAP_HOURS
    assert x[names.index("engagement_trend")] == pytest.approx(np.log(2 / 10))
    assert x[names.index("stage=new")] == 1 and x[names.index("source=referral")] == 0
    assert x[names.index("agent_response_hours")] == spec.agent_hours_fill


def test_rules_scorer_varies_with_behaviour_and_explains():
    scorer = RulesScorer()
    assert scorer.version == RULES_VERSION and scorer.version.startswith("rules-")
    engaged = _raw(
        days_since_reply=1, days_since_inbound=0.5, n30_reply=6, inbound_last14=8, inbound_prev14=7
    )
    silent = _raw(
        days_since_reply=12,
        days_since_inbound=9,
        n30_reply=1,
        inbound_last14=1,
        inbound_prev14=9,
        unanswered_outbound=3,
    )
    X = F.vectorize(F.RawFeatures.concat([engaged, silent]), scorer.spec)
    p = scorer.predict_proba(X)
    assert p[1] > p[0] + 0.3
    reasons = reasons_explain(scorer, X, p)
    assert reasons[0] == [] or all(r["impact"] > 0 for r in reasons[0])
    texts = [r["text"] for r in reasons[1]]
    assert "no reply in 12 days" in texts
    assert any("down 89%" in t for t in texts)
    # every named factor, moved to normal, lowers this lead's score (faithful)
    for r in reasons[1]:
        cols = F.group_columns(scorer.spec)[r["factor"]]
        moved = X[1].copy()
        ref = scorer.reference[cols]
        moved[cols] = np.where(np.isnan(ref), moved[cols], ref)
        assert scorer.predict_proba(moved[None, :])[0] < p[1]


def test_metrics_lift_brier_and_calibration_table():
    y = np.array([0] * 90 + [1] * 10)
    p = np.concatenate([np.full(90, 0.05), np.full(10, 0.9)])
    m = metrics_compute(y, p)
    assert m["roc_auc"] == 1.0 and m["top_decile_lift"] == 10.0
    assert m["brier"] == pytest.approx((90 * 0.05**2 + 10 * 0.1**2) / 100, abs=1e-4)
    assert [row["n"] for row in calibration_table(y, p)] == [90, 10]


def test_time_split_keeps_validation_strictly_later():
    times = np.repeat(np.arange(10), 5).astype(float)
    train, cal, val = time_split(times)
    assert times[train].max() < times[cal].min() <= times[cal].max() < times[val].min()


def test_artifact_refuses_a_changed_hash_or_library_version():
    scorer = RulesScorer()
    trained = TrainedScorer("x-1", "rules", scorer.spec, scorer.reference, estimator=None)
    blob, sha = artifact_dump(trained)
    import sklearn

    assert artifact_load(blob, sha256=sha, sklearn_version=sklearn.__version__).version == "x-1"
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        artifact_load(tampered, sha256=sha, sklearn_version=sklearn.__version__)
    with pytest.raises(ModelLoadError, match="scikit-learn 0.1"):
        artifact_load(blob, sha256=hashlib.sha256(blob).hexdigest(), sklearn_version="0.1")


def test_synthetic_history_is_deterministic_and_silence_precedes_loss():
    end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    a = history_generate(n_leads=60, days=120, end=end, seed=3)
    b = history_generate(n_leads=60, days=120, end=end, seed=3)
    assert a == b
    leads, events = a
    lost = [e for e in events if e.kind == "opportunity_lost"]
    assert lost, "some leads churn"
    inbound = {k for k in F.INBOUND_KINDS}
    for loss in lost:
        before = [
            e
            for e in events
            if e.lead_external_id == loss.lead_external_id
            and e.kind in inbound
            and loss.occurred_at - dt.timedelta(days=13) < e.occurred_at <= loss.occurred_at
        ]
        assert before == [], "a lead is marked lost only after two silent weeks"
