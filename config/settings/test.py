"""Test settings: the same real PostgreSQL and Redis, faster hashing, eager nothing."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES["default"]["KEY_PREFIX"] = env("CACHE_KEY_PREFIX", default="churn-test")  # noqa: F405
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = env("CHANNEL_LAYER_PREFIX", default="churn-test")  # noqa: F405
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# The in-process test worker (celery_worker fixture) must leave pytest's log capture alone.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
