"""Test settings: the same real PostgreSQL and Redis, faster hashing, eager nothing."""

import atexit
import os
import shutil
import tempfile

from .base import *  # noqa: F403
from .base import _REDIS_DB, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES["default"]["KEY_PREFIX"] = env("CACHE_KEY_PREFIX", default="churn-test")  # noqa: F405
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = (  # noqa: F405
    f"{env('CHANNEL_LAYER_PREFIX', default='churn-test')}:{_REDIS_DB}"
)
# Fresh connections per request/task, unless a benchmark's processes ask for the
# deployment's persistent ones (tests/bench/stack.py).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)  # noqa: F405
# The in-process test worker (celery_worker fixture) must leave pytest's log capture alone.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Multiprocess Prometheus, as in production: this process, its worker threads and any
# worker subprocess a test starts write to one directory that /metrics sums.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churn-test-prom-")
    atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], True)
PROMETHEUS_MULTIPROC_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
