"""Settings shared by every environment, read from the environment with django-environ."""

from pathlib import Path
from urllib.parse import unquote

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = BASE_DIR / ".data"

env = environ.Env()
# `manage.py up` writes the addresses of the embedded servers it started here, so that
# any other `manage.py` command run beside it reaches the same servers. Variables set
# in the real environment always win.
environ.Env.read_env(str(DATA_DIR / "services.env"), overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-local-only-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "channels",
    # ours, from the bottom of the stack up
    "churnapp",
    "notifications",
    "interventions",
    "tracking",
    "simulator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL: the source of truth -------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/churn"),
}
# A Unix socket directory arrives percent-encoded in the URL's host part.
DATABASES["default"]["HOST"] = unquote(DATABASES["default"].get("HOST") or "")
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, channel layer, cache and rate limiter (never the only copy) -----
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="churn"),
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env("CHANNEL_LAYER_PREFIX", default="churn"),
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1000),
            "expiry": 60,
        },
    }
}

# --- Celery ------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
# Named queues per concern, so a slow provider never starves scoring. Every task names
# its queue; `manage.py up` starts one worker on all of them, production runs workers
# per queue (see README).
CELERY_QUEUE_NAMES = [
    "default",  # housekeeping, sweepers
    "webhooks",  # processing stored inbound webhooks
    "scoring",  # batch and real-time rescoring, training
    "interventions",  # orchestration, outcome evaluation, escalation
    "sms",  # sends per channel family
    "email",
    "crm",  # GHL workflow and task calls
    "realtime",  # agent alerts, push, in-app, broadcasts
]
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
# Redis redelivers an unacked task after this many seconds; every retry backoff stays
# below it so a sleeping retry is never delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Each app adds its periodic jobs here; DatabaseScheduler copies them into the
# django-celery-beat tables at start, where managers can edit them in the admin.
CELERY_BEAT_SCHEDULE: dict = {}

# --- Auth, i18n, static ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env("DJANGO_STATIC_ROOT", default=str(DATA_DIR / "static"))

# --- DRF and the API schema ---------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "churnapp.api.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["churnapp.api.auth.HasTenant"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "churnapp.api.errors.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Proactive Churn Prevention API",
    "DESCRIPTION": (
        "The CRM-facing API: leads, activities, risk, interventions and analytics. "
        "Authenticate with a tenant API key: `Authorization: Api-Key <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc are served from the installed sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- GoHighLevel ------------------------------------------------------------------------
GHL_API_BASE_URL = env("GHL_API_BASE_URL", default="https://services.leadconnectorhq.com")
# GHL's published webhook public keys (PEM). Ed25519 signs `x-ghl-signature`; the
# legacy RSA key signs `x-wh-signature`.
GHL_WEBHOOK_ED25519_PUBLIC_KEY = env("GHL_WEBHOOK_ED25519_PUBLIC_KEY", default="")
GHL_WEBHOOK_RSA_PUBLIC_KEY = env("GHL_WEBHOOK_RSA_PUBLIC_KEY", default="")
GHL_WEBHOOK_MAX_AGE_SECONDS = env.int("GHL_WEBHOOK_MAX_AGE_SECONDS", default=300)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# --- Risk scoring: hourly batch rescore (fans out per tenant and chunk), weekly retrain.
from celery.schedules import crontab  # noqa: E402

CELERY_BEAT_SCHEDULE["churnapp.rescore_all_tenants"] = {
    "task": "churnapp.rescore_all_tenants",
    "schedule": crontab(minute=5),
    "options": {"queue": "scoring"},
}
CELERY_BEAT_SCHEDULE["churnapp.retrain_all_tenants"] = {
    "task": "churnapp.retrain_all_tenants",
    "schedule": crontab(minute=30, hour=3, day_of_week="sun"),
    "options": {"queue": "scoring"},
}
