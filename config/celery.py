"""The Celery application shared by workers and beat."""

import atexit
import logging
import os
import signal

from celery import Celery
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("churn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)

# Beat tick and worker heartbeats (celery signal receivers; Django is imported lazily).
import config.heartbeat  # noqa: E402, F401


@app.task(name="system.ping", queue="default")
def ping() -> str:
    """Health check: answers "pong" once a worker consuming the default queue runs it."""
    return "pong"


@beat_init.connect
def hold_beat_lock(sender=None, **kwargs) -> None:
    """Refuse to start a second beat against the same broker: it would double every job."""
    from config.beat_lock import BeatLock, lock_redis_url

    lock = BeatLock(lock_redis_url(app.conf.broker_url))
    if not lock.acquire():
        # SystemExit passes through Celery's signal dispatch (which logs Exceptions).
        raise SystemExit(
            f"Another Celery beat is already running ({lock.holder()}); exactly one beat "
            "may run per broker, so this one is not starting."
        )
    atexit.register(lock.release)

    def on_lost(holder: str | None) -> None:
        log.critical("beat lock taken over by %s; stopping this beat", holder)
        os.kill(os.getpid(), signal.SIGTERM)

    lock.keep_fresh(on_lost)
