"""`manage.py check --deploy` is clean under the production settings, given what
production requires (and nothing that would silence a check)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from django.conf import settings


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "churn.example.com",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/churn"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "GHL_WEBHOOK_ED25519_PUBLIC_KEY": "configured",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "CHURN_DATA_DIR": str(tmp_path),  # no services.env of a local `up` leaks in
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (0 silenced)" in result.stdout
