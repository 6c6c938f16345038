"""Pure model code: features, rules scorer, reasons, artifacts (no database)."""

import datetime as dt
import hashlib

import numpy as np
import pytest

from churnapp.ml import features as F
from churnapp.ml.model import (
    MIN_REASON_DROP,
    ModelLoadError,
    TrainedScorer,
    artifact_dump,
    artifact_load,
    calibration_table,
    metrics_compute,
    reasons_explain,
    scores_with_reasons,
    signed_log,
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


def _reasons_one_by_one(scorer, X, p, counterfactual, keys, top=3) -> list[list[dict]]:
    """The per-lead loop the numpy choice replaced, kept as its reference."""
    meta = {g.key: g for g in F.FACTOR_GROUPS}
    drops = p[np.newaxis, :] - counterfactual
    names = scorer.spec.names
    lead_cols = {}
    for key in keys:
        feature = meta[key].lead_feature
        if feature is not None and not np.isnan(scorer.reference[names.index(feature)]):
            j = names.index(feature)
            lead_cols[key] = (j, scorer.reference[j], meta[key].risky_direction)
    order = np.argsort(-drops, axis=0)
    out = []
    for i in range(len(X)):
        chosen = []
        for g in order[:, i]:
            impact = drops[g, i]
            if len(chosen) == top or impact < MIN_REASON_DROP:
                break
            check = lead_cols.get(keys[g])
            if check is not None and (X[i, check[0]] - check[1]) * check[2] <= 0:
                continue
            chosen.append(
                {
                    "factor": keys[g],
                    "text": F.factor_words(keys[g], X[i], scorer.spec),
                    "impact": round(float(impact), 4),
                }
            )
        out.append(chosen)
    return out


def test_reasons_chosen_for_all_leads_at_once_equal_the_per_lead_choice():
    # given 2,000 leads with every raw feature drawn at random (ties included)
    scorer = RulesScorer()
    rng = np.random.default_rng(7)
    rows = [
        [i, "new", "zillow", None]
        + [None if rng.random() < 0.1 else int(rng.integers(0, 40)) for _ in F.RAW_COLUMNS]
        for i in range(2000)
    ]
    X = F.vectorize(F.RawFeatures.from_rows(rows), scorer.spec)
    # when they are scored and explained
    p, reasons = scores_with_reasons(scorer, X)
    # then the reasons are those the per-lead loop chooses, in the same order
    groups = F.group_columns(scorer.spec)
    keys = list(groups)
    counterfactual = np.stack(
        [scorer.predict_proba(_moved_to_normal(scorer, X, groups[key])) for key in keys]
    )
    assert reasons == _reasons_one_by_one(scorer, X, p, counterfactual, keys)
    # and the scores are those of one call over the leads stacked with every group's
    # counterfactual copy (how they were computed before), to the bit
    stacked = scorer.predict_proba(
        np.concatenate([X] + [_moved_to_normal(scorer, X, groups[key]) for key in keys])
    ).reshape(len(keys) + 1, len(X))
    np.testing.assert_array_equal(stacked[0], p)
    np.testing.assert_array_equal(stacked[1:], counterfactual)
    assert sum(map(len, reasons)) > 300 and len({len(r) for r in reasons}) >= 3


def _moved_to_normal(scorer, X, cols):
    moved = X.copy()
    ref = scorer.reference[cols]
    moved[:, cols] = np.where(np.isnan(ref), X[:, cols], ref)
    return moved


def test_signed_log_is_sign_times_log1p_of_magnitude():
    X = np.array([[0.0, -0.0, 1.0, -1.0, 3.5, -1e9, np.inf, -np.inf, np.nan, 1e-300]])
    expected = np.sign(X) * np.log1p(np.abs(X))
    np.testing.assert_array_equal(signed_log(X), expected)
    assert signed_log(np.array([[2, -3]])).tolist() == [[np.log1p(2), -np.log1p(3)]]
