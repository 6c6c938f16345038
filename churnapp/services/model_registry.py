"""The model registry: register, promote and load churn models; rules when there is none."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import sklearn
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from churnapp.exceptions import ApplicationError, ConflictError
from churnapp.ml.model import ModelLoadError, Scorer, TrainedScorer, artifact_dump, artifact_load
from churnapp.ml.rules import RulesScorer
from churnapp.models import ChurnModel, ChurnModelStatus, Tenant

logger = logging.getLogger(__name__)

# Loaded models per worker process, keyed by artifact sha256: a real-time rescore pays
# for one indexed lookup of the active model's hash, never for unpickling.
_loaded: dict[str, TrainedScorer] = {}
_lock = threading.Lock()
_RULES = RulesScorer()


class ModelUnavailable(ApplicationError):
    """The tenant's active model cannot be loaded; scoring stops instead of guessing."""

    status_code = 503
    code = "model_unavailable"


def churn_model_register(
    *,
    tenant: Tenant,
    scorer: TrainedScorer,
    metrics: dict,
    comparison: dict,
    horizon_days: int,
    trained_as_of: dt.datetime,
    train_window: tuple[dt.datetime, dt.datetime],
    validation_window: tuple[dt.datetime, dt.datetime],
    n_train: int,
    n_validation: int,
) -> ChurnModel:
    blob, sha = artifact_dump(scorer)
    model = ChurnModel(
        tenant=tenant,
        version=scorer.version,
        algorithm=scorer.algorithm,
        status=ChurnModelStatus.CANDIDATE,
        artifact=blob,
        sha256=sha,
        sklearn_version=sklearn.__version__,
        feature_version=scorer.spec.version,
        feature_names=scorer.spec.names,
        horizon_days=horizon_days,
        train_window_start=train_window[0],
        train_window_end=train_window[1],
        validation_window_start=validation_window[0],
        validation_window_end=validation_window[1],
        trained_as_of=trained_as_of,
        n_train=n_train,
        n_validation=n_validation,
        metrics=metrics,
        comparison=comparison,
    )
    model.full_clean(exclude=["artifact"])
    model.save()
    return model


@transaction.atomic
def churn_model_activate(*, model: ChurnModel, user=None) -> ChurnModel:
    """Make `model` the tenant's active model and retire the one it replaces. Called by
    training when the candidate wins, or by a manager promoting it in the admin."""
    # Lock the candidate and the incumbent in pk order: two promotions never interleave.
    list(
        ChurnModel.objects.select_for_update()
        .filter(Q(pk=model.pk) | Q(tenant_id=model.tenant_id, status=ChurnModelStatus.ACTIVE))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    model = ChurnModel.objects.defer("artifact").get(pk=model.pk)
    if model.status == ChurnModelStatus.ACTIVE:
        return model
    if model.load_error:
        raise ConflictError(f"Model {model.version} failed to load: {model.load_error}")
    now = timezone.now()
    ChurnModel.objects.filter(tenant_id=model.tenant_id, status=ChurnModelStatus.ACTIVE).update(
        status=ChurnModelStatus.RETIRED, retired_at=now
    )
    model.status = ChurnModelStatus.ACTIVE
    model.activated_at = now
    model.promoted_by = user
    model.save(update_fields=["status", "activated_at", "promoted_by"])
    return model


def churn_model_load(*, model: ChurnModel) -> TrainedScorer:
    """Load (or reuse) a registered artifact, refusing one whose hash or library version
    does not match; the failure is recorded on the row and raised."""
    cached = _loaded.get(model.sha256)
    if cached is not None:
        return cached
    with _lock:
        if model.sha256 in _loaded:
            return _loaded[model.sha256]
        blob = model.artifact
        if blob is None or (isinstance(blob, memoryview) and blob.nbytes == 0):
            blob = ChurnModel.objects.values_list("artifact", flat=True).get(pk=model.pk)
        try:
            scorer = artifact_load(
                bytes(blob), sha256=model.sha256, sklearn_version=model.sklearn_version
            )
        except ModelLoadError as exc:
            ChurnModel.objects.filter(pk=model.pk).update(
                load_error=str(exc), load_error_at=timezone.now()
            )
            logger.error(
                "churn model %s (tenant %s) refused: %s", model.version, model.tenant_id, exc
            )
            raise ModelUnavailable(
                f"The active churn model {model.version} cannot be loaded: {exc}",
                details={"model_version": model.version},
            ) from exc
        _loaded[model.sha256] = scorer
        return scorer


def scorer_for_tenant(*, tenant_id: int) -> Scorer:
    """The tenant's active trained model, or the rules scorer (version `rules-v1`) when
    it has none yet. A broken active model raises ModelUnavailable: never a fallback."""
    row = (
        ChurnModel.objects.filter(tenant_id=tenant_id, status=ChurnModelStatus.ACTIVE)
        .only("id", "tenant_id", "sha256", "version", "sklearn_version")
        .first()
    )
    if row is None:
        return _RULES
    return churn_model_load(model=row)


def active_model(*, tenant_id: int) -> ChurnModel | None:
    return (
        ChurnModel.objects.filter(tenant_id=tenant_id, status=ChurnModelStatus.ACTIVE)
        .defer("artifact")
        .first()
    )


def loaded_cache_clear() -> None:
    with _lock:
        _loaded.clear()
