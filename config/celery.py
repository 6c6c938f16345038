"""The Celery application shared by workers and beat."""

import atexit
import logging
import os
import signal

from celery import Celery, bootsteps
from celery.signals import beat_init, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("churn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)

# Beat tick and worker heartbeats (celery signal receivers; Django is imported lazily).
import config.heartbeat  # noqa: E402, F401


class RescoreHintRelayStep(bootsteps.StartStopStep):
    """Runs churnapp's rescore hint relay (a LISTEN thread) in the worker's main process
    while the worker runs; settings RESCORE_HINT_RELAY=False leaves it out."""

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.relay = None

    def start(self, worker) -> None:
        from django.conf import settings

        if not getattr(settings, "RESCORE_HINT_RELAY", True):
            return
        from churnapp.hints import HintRelay

        self.relay = HintRelay().start()

    def stop(self, worker) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None


app.steps["worker"].add(RescoreHintRelayStep)


@app.task(name="system.ping", queue="default")
def ping() -> str:
    """Health check: answers "pong" once a worker consuming the default queue runs it."""
    return "pong"


@task_prerun.connect
def db_connections_checked(sender=None, **kwargs) -> None:
    """Each task starts as a request does: a connection past CONN_MAX_AGE, broken, or
    failing its health check is closed and the task opens a fresh one; a healthy one is
    reused (settings CELERY_DB_REUSE_MAX keeps Celery from closing it every time). An
    eager task runs inside its caller's work and leaves the caller's connection alone."""
    from django.db import close_old_connections, connection

    if getattr(getattr(sender, "request", None), "is_eager", False) or connection.in_atomic_block:
        return
    close_old_connections()


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
