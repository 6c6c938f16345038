"""Admin screens for risk scoring: model versions and their metrics, thresholds, runs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html_join

from churnapp.admin_scoping import TenantScopedAdmin
from churnapp.exceptions import ApplicationError
from churnapp.models import (
    ChurnDefinition,
    ChurnModel,
    ChurnModelStatus,
    RiskAssessment,
    RiskThresholds,
    ScoringRun,
)
from churnapp.services.model_registry import churn_model_activate


@admin.register(ChurnModel)
class ChurnModelAdmin(TenantScopedAdmin):
    list_display = (
        "version",
        "tenant",
        "status",
        "algorithm",
        "roc_auc",
        "pr_auc",
        "brier",
        "lift",
        "n_validation",
        "created_at",
        "load_error",
    )
    list_filter = ("status", "algorithm")
    actions = ("promote",)
    exclude = ("artifact",)
    readonly_fields = (
        "tenant",
        "version",
        "algorithm",
        "status",
        "sha256",
        "sklearn_version",
        "feature_version",
        "feature_names",
        "horizon_days",
        "train_window_start",
        "train_window_end",
        "validation_window_start",
        "validation_window_end",
        "trained_as_of",
        "n_train",
        "n_validation",
        "metrics",
        "calibration",
        "comparison",
        "activated_at",
        "promoted_by",
        "retired_at",
        "load_error",
        "load_error_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).defer("artifact")

    def has_add_permission(self, request):
        return False  # models come from training, never from a form

    @admin.display(description="ROC-AUC")
    def roc_auc(self, obj):
        return obj.metrics.get("roc_auc")

    @admin.display(description="PR-AUC")
    def pr_auc(self, obj):
        return obj.metrics.get("pr_auc")

    @admin.display(description="Brier")
    def brier(self, obj):
        return obj.metrics.get("brier")

    @admin.display(description="Top-decile lift")
    def lift(self, obj):
        return obj.metrics.get("top_decile_lift")

    @admin.display(description="Calibration (validation)")
    def calibration(self, obj):
        rows = obj.metrics.get("calibration", [])
        return format_html_join(
            "",
            "<div>{}: n={}, predicted {}, observed {}</div>",
            ((r["bin"], r["n"], r["mean_predicted"], r["observed_rate"]) for r in rows),
        )

    @admin.action(description="Promote to active (retires the current active model)")
    def promote(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model.", messages.ERROR)
            return
        model = queryset.get()
        if model.status == ChurnModelStatus.ACTIVE:
            self.message_user(request, f"{model.version} is already active.", messages.INFO)
            return
        try:
            churn_model_activate(model=model, user=request.user)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{model.version} is now the active model.", messages.SUCCESS)


@admin.register(RiskThresholds)
class RiskThresholdsAdmin(TenantScopedAdmin):
    list_display = ("tenant", "early_warning", "active_risk", "critical", "updated_at")


@admin.register(ChurnDefinition)
class ChurnDefinitionAdmin(TenantScopedAdmin):
    list_display = ("tenant", "horizon_days", "lost_is_churn", "min_training_snapshots")


@admin.register(ScoringRun)
class ScoringRunAdmin(TenantScopedAdmin):
    list_display = (
        "tenant",
        "slot",
        "model_version",
        "chunks_done",
        "chunks_total",
        "leads_scored",
        "tier_changes",
        "finished_at",
        "error",
    )
    list_filter = ("model_version",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RiskAssessment)
class RiskAssessmentAdmin(TenantScopedAdmin):
    # Tier changes only: daily snapshots are RiskSnapshot rows, keyed (lead, day), which
    # Django 5.2's admin cannot register (composite primary key); a lead's snapshots are
    # on its dashboard page and in its risk API history.
    list_display = (
        "lead",
        "assessed_at",
        "score",
        "previous_tier",
        "tier",
        "model_version",
    )
    list_filter = ("tier",)
    raw_id_fields = ("lead", "run")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
