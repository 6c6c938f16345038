"""Churn models: train, compare, calibrate, evaluate, explain and (de)serialize (no ORM)."""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass

import numpy as np
import sklearn
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from churnapp.ml.features import (
    FACTOR_GROUPS,
    MONOTONIC,
    FeatureSpec,
    factor_words,
    group_columns,
    reference_fit,
)

ARTIFACT_FORMAT = 1
MIN_REASON_DROP = 0.005  # a factor must move the probability by half a point to be named


class ModelLoadError(Exception):
    """An artifact that cannot be trusted: wrong hash, other library version, unreadable."""


class Scorer:
    """What scoring needs from any model: a version, a spec, probabilities and a normal."""

    version: str
    algorithm: str
    spec: FeatureSpec
    reference: np.ndarray

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class TrainedScorer(Scorer):
    version: str
    algorithm: str
    spec: FeatureSpec
    reference: np.ndarray
    estimator: object  # a fitted, calibrated scikit-learn classifier

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(X)[:, 1]


# --- Explanations ---------------------------------------------------------------------


def _normal(scorer: Scorer, values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reference values of `cols`; a NaN reference (a column the scorer ignores)
    keeps the lead's own value."""
    ref = scorer.reference[cols]
    return np.where(np.isnan(ref), values, ref)


def scores_with_reasons(
    scorer: Scorer, X: np.ndarray, top: int = 3
) -> tuple[np.ndarray, list[list[dict]]]:
    """Scores and the top factors that raised each: the leads and their counterfactuals
    (each factor group moved to normal) scored by the same model, so a factor is named
    only if moving it to normal lowers this lead's score: faithful by design."""
    if len(X) == 0:
        return np.zeros(0), []
    p = scorer.predict_proba(X)
    return p, reasons_explain(scorer, X, p, top)


def reasons_explain(scorer: Scorer, X: np.ndarray, p: np.ndarray, top: int = 3) -> list[list[dict]]:
    """Reasons for scores already computed: one model call per factor group over all the
    leads. (One call over a stacked copy of the matrix per group was slower: on a
    5,000-lead chunk 48 against 31-34 ms for the logistic model, 1.75 s against 0.27 s
    for a calibrated boosted one; the group's matrix stays in cache and nothing is
    copied 13-fold. Models score rows independently, so the figures are the same.)"""
    groups = group_columns(scorer.spec)
    keys = list(groups)
    n = len(X)
    if n == 0 or not keys:
        return [[] for _ in range(n)]
    counterfactual = np.empty((len(keys), n))
    moved = X.copy()
    for g, key in enumerate(keys):
        cols = groups[key]
        moved[:, cols] = _normal(scorer, X[:, cols], cols)
        counterfactual[g] = scorer.predict_proba(moved)
        moved[:, cols] = X[:, cols]
    return _reasons_from(scorer, X, p, counterfactual, keys, top)


def _reasons_from(
    scorer: Scorer,
    X: np.ndarray,
    p: np.ndarray,
    counterfactual: np.ndarray,
    keys: list[str],
    top: int,
) -> list[list[dict]]:
    """Each lead's top factors: by what moving them to normal takes off its score, at
    least MIN_REASON_DROP, and only where the lead is on the factor's risky side of
    normal. Chosen in numpy for all leads at once (a Python loop over every lead and
    factor was most of the reasons' cost, as much as their extra model rows); only the
    chosen ones are worded."""
    meta = {g.key: g for g in FACTOR_GROUPS}
    n = len(X)
    drops = p[np.newaxis, :] - counterfactual  # (G, n): how much each factor adds
    names = scorer.spec.names
    eligible = drops >= MIN_REASON_DROP
    for g, key in enumerate(keys):
        feature = meta[key].lead_feature
        if feature is not None and not np.isnan(scorer.reference[names.index(feature)]):
            j = names.index(feature)
            # the model leans on it, but the lead is not abnormal there
            eligible[g] &= ~((X[:, j] - scorer.reference[j]) * meta[key].risky_direction <= 0)
    order = np.argsort(-drops, axis=0)  # (G, n): factors by what they add, per lead
    ranked = eligible[order, np.arange(n)]  # (G, n): eligibility in each lead's order
    ranked &= np.cumsum(ranked, axis=0) <= top
    leads, ranks = np.nonzero(ranked.T)  # by lead, then rank
    factors = order[ranks, leads]
    out: list[list[dict]] = [[] for _ in range(n)]
    for i, g, impact in zip(
        leads.tolist(), factors.tolist(), drops[factors, leads].tolist(), strict=True
    ):
        key = keys[g]
        out[i].append(
            {
                "factor": key,
                "text": factor_words(key, X[i], scorer.spec),
                "impact": round(impact, 4),
            }
        )
    return out


def counterfactual_score(scorer: Scorer, x: np.ndarray, factor: str) -> float:
    """The score of one lead with one factor moved to normal (faithfulness checks)."""
    cols = group_columns(scorer.spec)[factor]
    moved = x.copy()
    moved[cols] = _normal(scorer, x[cols], cols)
    return float(scorer.predict_proba(moved[np.newaxis, :])[0])


# --- Metrics --------------------------------------------------------------------------


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "n": int(mask.sum()),
                    "mean_predicted": round(float(p[mask].mean()), 4),
                    "observed_rate": round(float(y[mask].mean()), 4),
                }
            )
    return table


def metrics_compute(y: np.ndarray, p: np.ndarray) -> dict:
    y = np.asarray(y, dtype=np.int64)
    both = len(np.unique(y)) == 2
    order = np.argsort(-p, kind="stable")
    k = max(1, int(round(len(p) * 0.1)))
    base = float(y.mean()) if len(y) else 0.0
    return {
        "n": int(len(y)),
        "positive_rate": round(base, 4),
        "roc_auc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "pr_auc": round(float(average_precision_score(y, p)), 4) if both else None,
        "brier": round(float(brier_score_loss(y, p)), 4),
        "top_decile_lift": round(float(y[order[:k]].mean()) / base, 3) if base > 0 else None,
        "calibration": calibration_table(y, p),
    }


def beats(candidate: dict, incumbent: dict) -> bool:
    """Brier score decides: tiers read calibrated probabilities, and Brier rewards both
    ranking and calibration. Ties go to the incumbent."""
    return candidate["brier"] < incumbent["brier"]


# --- Training -------------------------------------------------------------------------


@dataclass
class TrainingResult:
    scorer: TrainedScorer
    metrics: dict  # the chosen model's validation metrics
    candidates: dict  # algorithm -> validation metrics, for the comparison report
    n_train: int
    n_calibration: int
    n_validation: int


class SignedLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularized logistic regression whose coefficients may be held to a sign
    (`signs`: +1 >= 0, -1 <= 0, 0 free), fitted with L-BFGS-B. scikit-learn's own
    LogisticRegression has no bounds; without them correlated windows (n7/n14/n30)
    take opposite signs and a lead's score can fall while its silence lasts."""

    def __init__(self, C: float = 1.0, signs: tuple[int, ...] | None = None, max_iter: int = 500):
        self.C = C
        self.signs = signs
        self.max_iter = max_iter

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.classes_ = np.array([0, 1])
        n, d = X.shape
        signs = self.signs if self.signs is not None else (0,) * d
        bounds = [(0, None) if s > 0 else (None, 0) if s < 0 else (None, None) for s in signs]
        bounds.append((None, None))  # intercept
        lam = 1.0 / (self.C * n)

        def loss(w):
            z = X @ w[:-1] + w[-1]
            # log(1 + e^z) - y z, stably; gradient of the mean plus the L2 penalty
            value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * np.dot(w[:-1], w[:-1])
            residual = expit(z) - y
            grad = np.append(X.T @ residual / n + lam * w[:-1], residual.mean())
            return value, grad

        result = minimize(
            loss,
            np.zeros(d + 1),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": self.max_iter},
        )
        self.coef_ = result.x[:-1].reshape(1, -1)
        self.intercept_ = result.x[-1:]
        self.n_iter_ = result.nit
        return self

    def decision_function(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X):
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def signed_log(X: np.ndarray) -> np.ndarray:
    """Counts and durations are heavy-tailed: compare them on a log scale (sign kept).

    sign(X) * log1p(|X|) in one new array instead of four: the reasons run it over the
    leads and a copy per factor group, where the temporaries cost more than the logs.
    The same values (a zero may keep its sign, which nothing downstream can tell)."""
    out = np.abs(np.asarray(X, dtype=float))
    np.log1p(out, out=out)
    np.copysign(out, X, out=out)
    return out


def _candidates(spec: FeatureSpec, seed: int) -> dict[str, object]:
    names = spec.names
    monotonic = [MONOTONIC.get(name, 0) for name in names]
    return {
        "logreg": make_pipeline(
            FunctionTransformer(signed_log),
            StandardScaler(),
            SignedLogisticRegression(C=0.1, signs=tuple(monotonic)),
        ),
        "gbm": HistGradientBoostingClassifier(
            max_iter=120,
            learning_rate=0.05,
            max_leaf_nodes=8,
            min_samples_leaf=80,
            l2_regularization=1.0,
            monotonic_cst=monotonic,
            early_stopping=False,
            random_state=seed,
        ),
    }


def time_split(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train on the oldest snapshot instants, calibrate on the next, validate on the
    newest, so every model is judged on a future it never saw."""
    instants = np.unique(times)
    n = len(instants)
    if n < 3:
        raise ValueError("need snapshots at three or more as-of instants for a time split")
    i_cal = max(1, int(n * 0.6))
    i_val = min(n - 1, max(i_cal + 1, int(n * 0.8)))
    cut_cal, cut_val = instants[i_cal], instants[i_val]
    return times < cut_cal, (times >= cut_cal) & (times < cut_val), times >= cut_val


def model_train(
    *,
    X: np.ndarray,
    y: np.ndarray,
    times: np.ndarray,
    spec: FeatureSpec,
    version: str,
    seed: int = 7,
) -> TrainingResult:
    """Fit every candidate on the train slice, calibrate each (Platt scaling, smooth and
    monotone so scores and reasons move with behaviour) on the calibration slice, keep
    the one with the best validation Brier score."""
    train, cal, val = time_split(times)
    for name, mask in (("train", train), ("calibration", cal)):
        if len(np.unique(y[mask])) < 2:
            raise ValueError(f"the {name} slice holds only one class; need more history")
    results = {}
    fitted = {}
    for name, estimator in _candidates(spec, seed).items():
        estimator.fit(X[train], y[train])
        calibrated = CalibratedClassifierCV(FrozenEstimator(estimator), method="sigmoid")
        calibrated.fit(X[cal], y[cal])
        fitted[name] = calibrated
        results[name] = metrics_compute(y[val], calibrated.predict_proba(X[val])[:, 1])
    best = min(results, key=lambda n: (results[n]["brier"], n))
    reference = reference_fit(X[train], y[train], spec)
    scorer = TrainedScorer(
        version=f"{best}-{version}",
        algorithm=best,
        spec=spec,
        reference=reference,
        estimator=fitted[best],
    )
    return TrainingResult(
        scorer=scorer,
        metrics=results[best],
        candidates=results,
        n_train=int(train.sum()),
        n_calibration=int(cal.sum()),
        n_validation=int(val.sum()),
    )


# --- Artifacts ------------------------------------------------------------------------


def artifact_dump(scorer: TrainedScorer) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    pickle.dump(
        {"format": ARTIFACT_FORMAT, "sklearn": sklearn.__version__, "scorer": scorer},
        buffer,
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def artifact_load(blob: bytes, *, sha256: str, sklearn_version: str) -> TrainedScorer:
    """Refuses an artifact whose bytes do not hash to the registered sha256, or that was
    built by another scikit-learn than the one running (pickles do not travel)."""
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise ModelLoadError(
            f"artifact sha256 mismatch: registered {sha256[:12]}, got {actual[:12]}"
        )
    if sklearn_version != sklearn.__version__:
        raise ModelLoadError(
            f"artifact built with scikit-learn {sklearn_version}, running {sklearn.__version__}"
        )
    try:
        payload = pickle.loads(blob)  # noqa: S301 - bytes verified against the registry hash
    except Exception as exc:
        raise ModelLoadError(f"artifact unreadable: {exc}") from exc
    if payload.get("format") != ARTIFACT_FORMAT:
        raise ModelLoadError(f"artifact format {payload.get('format')} is not {ARTIFACT_FORMAT}")
    return payload["scorer"]
