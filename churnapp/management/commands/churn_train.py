"""Train, evaluate and register a tenant's churn model as of an instant."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from churnapp.management.commands._tenant_arg import instant_from_arg, tenant_from_arg
from churnapp.services.training import churn_model_train


def _row(name: str, m: dict) -> str:
    return (
        f"  {name:<10} n={m['n']:<6} roc_auc={m['roc_auc']}  pr_auc={m['pr_auc']}  "
        f"brier={m['brier']}  top_decile_lift={m['top_decile_lift']}"
    )


class Command(BaseCommand):
    help = (
        "Train on snapshots whose label horizon ends before --as-of (default now), compare "
        "a regularized logistic regression and a gradient-boosted model on a time-ordered "
        "validation split, calibrate, print the metrics and register the model."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug or id")
        parser.add_argument("--as-of", help="YYYY-MM-DD or ISO datetime; default now")
        parser.add_argument("--horizon-days", type=int, help="label horizon (default: tenant's)")
        parser.add_argument(
            "--no-promote", action="store_true", help="register as candidate even if it wins"
        )

    def handle(self, *args, **options):
        tenant = tenant_from_arg(options["tenant"])
        as_of = instant_from_arg(options["as_of"])
        horizon = options["horizon_days"]
        if horizon is not None and not 1 <= horizon <= 365:
            raise CommandError("--horizon-days must be between 1 and 365.")
        outcome = churn_model_train(
            tenant=tenant, as_of=as_of, horizon_days=horizon, promote=not options["no_promote"]
        )
        self.stdout.write(
            f"tenant {tenant.slug}: {outcome.n_snapshots} labelled snapshots, "
            f"{outcome.n_positive} churned, as of {as_of.isoformat()}"
        )
        if outcome.model is None:
            raise CommandError(outcome.message)
        model = outcome.model
        self.stdout.write(
            f"train window {model.train_window_start:%Y-%m-%d} .. {model.train_window_end:%Y-%m-%d}"
            f" ({model.n_train} snapshots); validation {model.validation_window_start:%Y-%m-%d} .. "
            f"{model.validation_window_end:%Y-%m-%d} ({model.n_validation})"
        )
        self.stdout.write("validation metrics (calibrated):")
        for name, metrics in outcome.candidates.items():
            self.stdout.write(_row(name, metrics))
        self.stdout.write(
            _row(f"incumbent {model.comparison['incumbent']}", outcome.incumbent_metrics)
        )
        self.stdout.write(f"calibration of {model.version}:")
        self.stdout.write("  bin        n      mean_predicted  observed_rate")
        for row in outcome.metrics["calibration"]:
            self.stdout.write(
                f"  {row['bin']:<10} {row['n']:<6} {row['mean_predicted']:<15} {row['observed_rate']}"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"registered {model.version} (sha256 {model.sha256[:12]}): {outcome.message}"
            )
        )
