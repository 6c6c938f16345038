"""Training: point-in-time snapshots with labels from the horizon after each, a trained
and calibrated model, and promotion only when it beats the incumbent on the same data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from django.db.models import Min
from django.utils import timezone

from churnapp import risk_selectors
from churnapp.ml.features import RawFeatures, spec_fit, vectorize
from churnapp.ml.model import beats, metrics_compute, model_train, time_split
from churnapp.models import ChurnModel, LeadActivity, Tenant
from churnapp.services.model_registry import (
    churn_model_activate,
    churn_model_register,
    scorer_for_tenant,
)

SNAPSHOT_CHUNK = 5000
WARMUP = dt.timedelta(days=14)  # the first snapshot needs some history to describe


@dataclass
class TrainingSet:
    raw: RawFeatures
    y: np.ndarray
    times: np.ndarray  # epoch seconds of each snapshot's as-of instant
    instants: list[dt.datetime] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainingOutcome:
    model: ChurnModel | None
    promoted: bool
    message: str
    metrics: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    incumbent_metrics: dict = field(default_factory=dict)
    n_snapshots: int = 0
    n_positive: int = 0


def training_set_build(
    *,
    tenant_id: int,
    as_of: dt.datetime,
    horizon_days: int,
    every_days: int,
    lost_is_churn: bool = True,
    max_leads: int | None = None,
) -> TrainingSet:
    """Snapshots at as-of instants every `every_days`, newest first back to the first
    activity, keeping only those whose label horizon ends by `as_of`: nothing trained
    on can depend on what happened after `as_of`."""
    first = LeadActivity.objects.filter(tenant_id=tenant_id, occurred_at__lte=as_of).aggregate(
        first=Min("occurred_at")
    )["first"]
    horizon = dt.timedelta(days=horizon_days)
    instants: list[dt.datetime] = []
    t = as_of - horizon
    while first is not None and t >= first + WARMUP:
        instants.append(t)
        t -= dt.timedelta(days=every_days)
    instants.reverse()
    lead_ids = risk_selectors.tenant_lead_ids(tenant_id=tenant_id, only_active=False)
    if max_leads and len(lead_ids) > max_leads:
        # An even, deterministic sample: every k-th lead by id.
        lead_ids = lead_ids[:: -(-len(lead_ids) // max_leads)]
    parts, labels, times = [], [], []
    for instant in instants:
        hours = risk_selectors.agent_response_hours(tenant_id=tenant_id, as_of=instant)
        for start in range(0, len(lead_ids), SNAPSHOT_CHUNK):
            chunk = [int(i) for i in lead_ids[start : start + SNAPSHOT_CHUNK]]
            labelled = risk_selectors.lead_labels(
                tenant_id=tenant_id,
                lead_ids=chunk,
                as_of=instant,
                horizon_days=horizon_days,
                lost_is_churn=lost_is_churn,
            )
            if not labelled:
                continue
            raw = risk_selectors.lead_features(
                tenant_id=tenant_id,
                as_of=instant,
                lead_ids=sorted(labelled),
                agent_response_hours=hours,
            )
            parts.append(raw)
            labels.extend(labelled[int(i)] for i in raw.lead_ids)
            times.extend([instant.timestamp()] * len(raw))
    if not parts:
        empty = RawFeatures.from_rows([])
        return TrainingSet(empty, np.zeros(0, dtype=np.int64), np.zeros(0), instants)
    return TrainingSet(
        RawFeatures.concat(parts), np.array(labels, dtype=np.int64), np.array(times), instants
    )


def churn_model_train(
    *,
    tenant: Tenant,
    as_of: dt.datetime | None = None,
    horizon_days: int | None = None,
    promote: bool = True,
) -> TrainingOutcome:
    """Train on the tenant's history as of `as_of`, register the model and activate it
    if it beats the incumbent (the active model, or rules-v1) on the same validation
    snapshots. With too little labelled history nothing is registered and the tenant
    stays on the rules scorer; the outcome says so."""
    as_of = as_of or timezone.now()
    definition = risk_selectors.tenant_churn_definition(tenant_id=tenant.id)
    horizon = horizon_days or definition.horizon_days
    data = training_set_build(
        tenant_id=tenant.id,
        as_of=as_of,
        horizon_days=horizon,
        every_days=definition.snapshot_every_days,
        lost_is_churn=definition.lost_is_churn,
        max_leads=definition.max_training_leads,
    )
    n, positives = len(data), int(data.y.sum())
    if (
        n < definition.min_training_snapshots
        or positives < definition.min_positive_snapshots
        or len(data.instants) < 5
        or n - positives < definition.min_positive_snapshots
    ):
        return TrainingOutcome(
            model=None,
            promoted=False,
            message=(
                f"Not enough labelled history: {n} snapshots ({positives} churned) over "
                f"{len(data.instants)} instants; need {definition.min_training_snapshots} "
                f"snapshots, {definition.min_positive_snapshots} of each class and 5 instants. "
                "The tenant stays on the rules scorer."
            ),
            n_snapshots=n,
            n_positive=positives,
        )
    spec = spec_fit(data.raw)
    X = vectorize(data.raw, spec)
    stamp = as_of.astimezone(dt.UTC).strftime("%Y%m%dT%H%M")
    result = model_train(X=X, y=data.y, times=data.times, spec=spec, version=f"{stamp}-h{horizon}")
    train, _cal, val = time_split(data.times)

    # The incumbent is judged on exactly the validation snapshots, through its own spec.
    incumbent = scorer_for_tenant(tenant_id=tenant.id)
    val_raw = data.raw.take(val)
    incumbent_metrics = metrics_compute(
        data.y[val], incumbent.predict_proba(vectorize(val_raw, incumbent.spec))
    )
    wins = beats(result.metrics, incumbent_metrics)
    version = result.scorer.version
    if ChurnModel.objects.filter(tenant=tenant, version=version).exists():
        version = f"{version}-{ChurnModel.objects.filter(tenant=tenant).count()}"
        result.scorer.version = version

    def window(mask: np.ndarray) -> tuple[dt.datetime, dt.datetime]:
        ts = data.times[mask]
        return (
            dt.datetime.fromtimestamp(float(ts.min()), dt.UTC),
            dt.datetime.fromtimestamp(float(ts.max()), dt.UTC),
        )

    metrics = {
        **result.metrics,
        "candidates": {
            k: {m: v for m, v in c.items() if m != "calibration"}
            for k, c in result.candidates.items()
        },
        "n_calibration": result.n_calibration,
    }
    model = churn_model_register(
        tenant=tenant,
        scorer=result.scorer,
        metrics=metrics,
        comparison={
            "incumbent": incumbent.version,
            "incumbent_metrics": {m: v for m, v in incumbent_metrics.items() if m != "calibration"},
            "beats_incumbent": wins,
            "criterion": "lower validation Brier score",
        },
        horizon_days=horizon,
        trained_as_of=as_of,
        train_window=window(train),
        validation_window=window(val),
        n_train=result.n_train,
        n_validation=result.n_validation,
    )
    promoted = False
    if wins and promote:
        churn_model_activate(model=model)
        promoted = True
    return TrainingOutcome(
        model=model,
        promoted=promoted,
        message=(
            f"{model.version}: validation Brier {result.metrics['brier']} vs "
            f"{incumbent.version} {incumbent_metrics['brier']}; "
            + ("activated." if promoted else "kept as candidate (a manager may promote it).")
        ),
        metrics=result.metrics,
        candidates=result.candidates,
        incumbent_metrics=incumbent_metrics,
        n_snapshots=n,
        n_positive=positives,
    )
