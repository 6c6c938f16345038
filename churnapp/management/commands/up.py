"""`manage.py up`: run the whole stack in the foreground (see config/supervisor.py)."""

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from config.supervisor import Supervisor, default_data_dir


class Command(BaseCommand):
    help = (
        "Run everything on this machine: PostgreSQL and Redis (embedded when DATABASE_URL / "
        "REDIS_URL are unset), migrations, a demo tenant, daphne (HTTP + WebSocket), one "
        "Celery worker on every queue and one beat. Ctrl-C stops it all."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address daphne binds")
        parser.add_argument("--port", type=int, default=8000, help="port daphne listens on")
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where embedded servers keep their data (default: $CHURN_DATA_DIR or .data/)",
        )
        parser.add_argument(
            "--concurrency", type=int, default=2, help="Celery worker processes (default 2)"
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds to wait for children to exit before killing them",
        )

        parser.add_argument(
            "--no-sim",
            action="store_true",
            help="no living demo world (simulate_live); also CHURN_DEMO_SIM=0",
        )

    def handle(self, *args, **options):
        data_dir = options["data_dir"] or Path(
            os.environ.get("CHURN_DATA_DIR") or default_data_dir()
        )
        supervisor = Supervisor(
            host=options["host"],
            port=options["port"],
            data_dir=data_dir,
            concurrency=options["concurrency"],
            stop_timeout=options["stop_timeout"],
            demo_sim=not options["no_sim"] and os.environ.get("CHURN_DEMO_SIM", "1") != "0",
            out=self.stdout,
        )
        sys.exit(supervisor.run())
