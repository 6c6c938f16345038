"""Settings shared by every environment, read from the environment with django-environ."""

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Where `manage.py up` keeps the embedded servers' data, services.env and static files.
DATA_DIR = Path(os.environ.get("CHURN_DATA_DIR") or BASE_DIR / ".data").resolve()

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
    "config.request_limits.RequestBodyLimitMiddleware",
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
# The hottest writes run as server-side prepared statements (churnapp.prepared). Turn off
# behind a pooler that shares server sessions between clients (PgBouncer, transaction mode).
DATABASE_SERVER_PREPARE = env.bool("DATABASE_SERVER_PREPARE", default=True)
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

# The pub/sub layer: a group send is one PUBLISH, and each web process, subscribed once per
# group, fans the event out to its own sockets in memory. The list-based core layer pushed
# one copy per member (200 dashboard sockets: 200 copies, each read back with its own
# BZPOPMIN by the same daphne), which put the last socket of a busy tenant hundreds of ms
# behind the commit. Nothing is held for an absent reader, which is what the dashboard
# wants: the lifecycle log in PostgreSQL is the copy, and a socket that reconnects resyncs
# from it. Redis pub/sub ignores the database number, so the prefix carries it: two
# deployments (or test runs) on one server but different databases never hear each other.
_REDIS_DB = urlparse(REDIS_URL).path.strip("/") or "0"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "config.channel_layers.RedisPubSubChannelLayer",
        "CONFIG": {
            # A publish on a connection that went dead gives up after this long (the
            # receive side polls with its own short timeout).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": f"{env('CHANNEL_LAYER_PREFIX', default='churn')}:{_REDIS_DB}",
            # Messages one consumer may have waiting; beyond it new ones are dropped for
            # that consumer alone (config/channel_layers.py).
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1000),
        },
    }
}

# --- Celery ------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
# Results are kept (an hour) so health checks and tests can wait on a task's answer.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
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
# Celery's Django fixup closes every database connection before and after each task
# unless this is set (then only every this many tasks): a new PostgreSQL connection per
# send or rescore cost more than the work. Connections are instead recycled as requests
# recycle them, by CONN_MAX_AGE and health checks (config.celery: close_old_connections
# before each task).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=100_000)
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
# Every worker runs the real-time rescore hint relay (churnapp.hints); one of them, the
# holder of a PostgreSQL advisory lock, listens and the others stand by. False: none here.
RESCORE_HINT_RELAY = env.bool("RESCORE_HINT_RELAY", default=True)
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
# Let daphne serve static files itself (admin CSS, Swagger UI) through Django's
# ASGIStaticFilesHandler; on in local settings. Off when a proxy or CDN serves STATIC_ROOT.
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=False)

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
    # JSON nested deeper than churnapp.normalize.JSON_MAX_DEPTH is a 400, never a 500.
    "DEFAULT_PARSER_CLASSES": [
        "churnapp.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["churnapp.api.throttling.ApiKeyRateThrottle"],
}
# Requests per window for each API key (or dashboard user), counted in Redis across all
# web processes; "N/second|minute|hour|day" or "N/10s". Empty: no limit. Over it: 429
# with Retry-After.
API_KEY_RATE_LIMIT = env("API_KEY_RATE_LIMIT", default="60000/minute")
# Bodies larger than this are answered 413 before anything reads them (admin uploads
# excepted); the largest batch (1,000 leads or activities) fits well within the default.
REQUEST_MAX_BODY_BYTES = env.int("REQUEST_MAX_BODY_BYTES", default=2_621_440)
# Threads a web process runs requests' sync code on (config.asgi_threads): each keeps
# its database connection across requests, so a process holds at most this many.
WEB_SYNC_THREADS = env.int("WEB_SYNC_THREADS", default=8)

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
    "ENUM_NAME_OVERRIDES": {
        "InterventionStatusEnum": "interventions.models.InterventionStatus",
        "EscalationStatusEnum": "interventions.models.EscalationStatus",
        "LeadStatusEnum": "churnapp.models.LeadStatus",
    },
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

# churnapp: re-enqueue stored GHL webhooks whose enqueue was lost (every 5 minutes).
CELERY_BEAT_SCHEDULE["churnapp-webhook-sweep"] = {
    "task": "churnapp.webhook_sweep",
    "schedule": 300.0,
}

# --- Notifications: channels, providers, retries, tracking ------------------------------
# Public address of this site: tracking links, unsubscribe links and provider callbacks.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://localhost:8000")
# Backend per channel (dotted path); a tenant's ChannelConfig overrides it. Local
# default: print to the console, except live alerts which use the channel layer.
NOTIFICATION_BACKENDS = {
    "sms": env(
        "NOTIFICATIONS_SMS_BACKEND", default="notifications.backends.console.ConsoleBackend"
    ),
    "email": env(
        "NOTIFICATIONS_EMAIL_CHANNEL_BACKEND",
        default="notifications.backends.console.ConsoleBackend",
    ),
    "agent_alert": env(
        "NOTIFICATIONS_AGENT_ALERT_BACKEND",
        default="notifications.backends.agent_alert.ChannelLayerAlertBackend",
    ),
    "in_app": env(
        "NOTIFICATIONS_IN_APP_BACKEND", default="notifications.backends.console.ConsoleBackend"
    ),
    "push": env(
        "NOTIFICATIONS_PUSH_BACKEND", default="notifications.backends.console.ConsoleBackend"
    ),
    "ghl_workflow": env(
        "NOTIFICATIONS_GHL_WORKFLOW_BACKEND",
        default="notifications.backends.console.ConsoleBackend",
    ),
    "ghl_task": env(
        "NOTIFICATIONS_GHL_TASK_BACKEND", default="notifications.backends.console.ConsoleBackend"
    ),
}
# The Django email backend DjangoEmailBackend sends through (SMTP or an anymail ESP).
NOTIFICATIONS_EMAIL_BACKEND = env(
    "NOTIFICATIONS_EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="noreply@localhost")
NOTIFICATIONS_EMAIL_MESSAGE_ID_DOMAIN = env(
    "NOTIFICATIONS_EMAIL_MESSAGE_ID_DOMAIN", default="churn.local"
)
# anymail ESP settings, e.g. ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_WEBHOOK_SECRET.
ANYMAIL = {
    "WEBHOOK_SECRET": env("ANYMAIL_WEBHOOK_SECRET", default=""),
    "POSTMARK_SERVER_TOKEN": env("ANYMAIL_POSTMARK_SERVER_TOKEN", default=""),
    "POSTMARK_API_URL": env("ANYMAIL_POSTMARK_API_URL", default="https://api.postmarkapp.com/"),
}
GHL_API_TOKEN = env("GHL_API_TOKEN", default="")
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN", default="")
TWILIO_API_BASE_URL = env("TWILIO_API_BASE_URL", default="https://api.twilio.com")
TWILIO_FROM_NUMBER = env("TWILIO_FROM_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env("TWILIO_MESSAGING_SERVICE_SID", default="")
VAPID_PUBLIC_KEY = env("VAPID_PUBLIC_KEY", default="")
VAPID_PRIVATE_KEY = env("VAPID_PRIVATE_KEY", default="")
VAPID_CLAIMS_SUB = env("VAPID_CLAIMS_SUB", default="mailto:ops@localhost")
IN_APP_WEBHOOK_SECRET = env("IN_APP_WEBHOOK_SECRET", default="")
NOTIFICATIONS_HTTP_CONNECT_TIMEOUT = env.float("NOTIFICATIONS_HTTP_CONNECT_TIMEOUT", default=5.0)
NOTIFICATIONS_HTTP_READ_TIMEOUT = env.float("NOTIFICATIONS_HTTP_READ_TIMEOUT", default=15.0)
NOTIFICATIONS_MAX_ATTEMPTS = env.int("NOTIFICATIONS_MAX_ATTEMPTS", default=5)
NOTIFICATIONS_BACKOFF_BASE_SECONDS = env.float("NOTIFICATIONS_BACKOFF_BASE_SECONDS", default=10.0)
# Capped again below 80% of the broker visibility timeout (see backoff_ceiling()).
NOTIFICATIONS_BACKOFF_MAX_SECONDS = env.float("NOTIFICATIONS_BACKOFF_MAX_SECONDS", default=900.0)
# A queued message untouched this long has lost its task: the sweeper enqueues it again.
NOTIFICATIONS_SWEEP_AFTER_SECONDS = env.int("NOTIFICATIONS_SWEEP_AFTER_SECONDS", default=120)
# A `sending` claim older than this belongs to a dead worker (> connect + read timeout).
NOTIFICATIONS_STALE_SENDING_SECONDS = env.int("NOTIFICATIONS_STALE_SENDING_SECONDS", default=300)
NOTIFICATIONS_RECONCILE_WINDOW_SECONDS = env.int(
    "NOTIFICATIONS_RECONCILE_WINDOW_SECONDS", default=86400
)
NOTIFICATIONS_CALLBACK_MAX_AGE_SECONDS = env.int(
    "NOTIFICATIONS_CALLBACK_MAX_AGE_SECONDS", default=300
)
# Shared across workers in Redis (moving window), per provider and account/location.
NOTIFICATIONS_RATE_LIMITS = {
    "ghl": env("NOTIFICATIONS_GHL_RATE_LIMIT", default="100 per 10 seconds"),
    "twilio": env("NOTIFICATIONS_TWILIO_RATE_LIMIT", default="100 per 1 second"),
}
# The batch send path: messages one task claims at once, and how many are counted,
# called and settled together (a worker that dies mid-chunk leaves at most this many
# `unknown`); with DRAIN a single send's task takes its tenant's other due messages
# along as a batch (off: a worker killed mid-drain strands a chunk of claims until the
# sweeper's stale time, where a single send strands one).
NOTIFICATIONS_SEND_BATCH_SIZE = env.int("NOTIFICATIONS_SEND_BATCH_SIZE", default=50)
# 50 (the whole batch), not 25 or 10: per-chunk work (claim, load, suppression, rate
# limit, attempt count and its WAL flush, settle and its flush) amortized over more sends.
# 10 -> 25 cut the send benchmark's CPU from 3.7-5.2 to 2.6-3.3 ms per message (3 A/B
# pairs); 25 -> 50 from 2.15-2.42 to 1.85-2.18 (2 A/B pairs interleaved, 2026-12-07:
# 839 / 738 -> 965 / 824 msg/s). A kill mid-chunk leaves up to 50 `unknown` for
# reconciliation instead of 25.
NOTIFICATIONS_SEND_CHUNK_SIZE = env.int("NOTIFICATIONS_SEND_CHUNK_SIZE", default=50)
NOTIFICATIONS_SEND_DRAIN = env.bool("NOTIFICATIONS_SEND_DRAIN", default=False)
NOTIFICATIONS_RATE_LIMIT_PREFIX = env("NOTIFICATIONS_RATE_LIMIT_PREFIX", default="churn-ratelimit")
NOTIFICATIONS_SMS_OPT_OUT_TEXT = env(
    "NOTIFICATIONS_SMS_OPT_OUT_TEXT", default="Reply STOP to opt out."
)
NOTIFICATIONS_SMS_HELP_TEXT = env(
    "NOTIFICATIONS_SMS_HELP_TEXT",
    default="{tenant}: reply STOP to stop messages, START to resume. Msg&data rates may apply.",
)
NOTIFICATIONS_SMS_START_TEXT = env(
    "NOTIFICATIONS_SMS_START_TEXT",
    default="{tenant}: you will receive messages again. Reply STOP to opt out.",
)
NOTIFICATIONS_TRACK_OPENS = env.bool("NOTIFICATIONS_TRACK_OPENS", default=True)
NOTIFICATIONS_TRACK_CLICKS = env.bool("NOTIFICATIONS_TRACK_CLICKS", default=True)
NOTIFICATIONS_PUSH_TTL = env.int("NOTIFICATIONS_PUSH_TTL", default=3600)
NOTIFICATIONS_USER_AGENT = "churn-notifications/1.0"
CELERY_BEAT_SCHEDULE["notifications-outbox-sweep"] = {
    "task": "notifications.outbox_sweep",
    "schedule": env.float("NOTIFICATIONS_SWEEP_EVERY_SECONDS", default=60.0),
    "options": {"queue": "default"},
}

# --- Interventions ----------------------------------------------------------------------
# Keys the holdout hash; changing it reshuffles only leads not yet assigned (assignments
# are stored and sticky).
HOLDOUT_HASH_KEY = env("HOLDOUT_HASH_KEY", default=SECRET_KEY)
# The messages one transaction plans (an intervention's steps, a batch rescore's many
# interventions) are sent together after it commits: up to this many, in a worker, right
# there in the same process (the detection path: no publish, broker hop or task of their
# own); more, or outside a worker, through the batch send tasks. 0 always publishes.
INTERVENTIONS_SEND_HERE_MAX = env.int("INTERVENTIONS_SEND_HERE_MAX", default=3)
CELERY_BEAT_SCHEDULE["interventions-evaluate-windows"] = {
    "task": "interventions.evaluate_windows",
    "schedule": env.float("INTERVENTIONS_EVALUATE_EVERY_SECONDS", default=60.0),
}
CELERY_BEAT_SCHEDULE["interventions-escalation-sla"] = {
    "task": "interventions.escalation_sla_check",
    "schedule": env.float("ESCALATION_SLA_CHECK_EVERY_SECONDS", default=60.0),
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

# --- Live dashboard -------------------------------------------------------------------
# Seconds between heartbeats on /ws/tracking/; an event announced by one heartbeat and
# not delivered by the next makes the consumer close with "resync" (the page catches up).
TRACKING_WS_HEARTBEAT_SECONDS = env.float("TRACKING_WS_HEARTBEAT_SECONDS", default=15.0)

# --- Operations: metrics, health, logs, queues (issue #11; see docs/scaling.md) ----------
# The ops wiring (signal receivers feeding Prometheus, the admin health page) lives in config.
INSTALLED_APPS += ["config.apps.OpsConfig"]
MIDDLEWARE += [
    "config.logging.RequestLogContextMiddleware",
    "config.metrics.WebhookRejectionMiddleware",
]
# Every process (daphne, each worker, beat) writes its counters here so that /metrics
# on the web sums them (prometheus-client's multiprocess mode). Empty: this process only.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    os.makedirs(PROMETHEUS_MULTIPROC_DIR, exist_ok=True)
# When set, /metrics answers only `Authorization: Bearer <token>`.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# A worker on its own machine/container serves its series on this port (0: off).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDR = env("WORKER_METRICS_ADDR", default="0.0.0.0")
# Heartbeats: beat and every worker write a Redis key; /readyz and the admin read them.
OPS_HEARTBEAT_SECONDS = env.float("OPS_HEARTBEAT_SECONDS", default=15.0)
# A beat or worker silent for longer than this is reported stale.
OPS_HEARTBEAT_STALE_SECONDS = env.float("OPS_HEARTBEAT_STALE_SECONDS", default=90.0)
# Read-only analytics may go to a replica; empty: everything reads the primary.
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = env.db("DATABASE_REPLICA_URL")
    DATABASES["replica"]["HOST"] = unquote(DATABASES["replica"].get("HOST") or "")
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    DATABASE_ROUTERS = ["config.db_router.AnalyticsReplicaRouter"]
# "json" (one object per line, ids only, no personal data) or "plain".
LOG_FORMAT = env("LOG_FORMAT", default="plain")
LOGGING["formatters"]["json"] = {"()": "config.logging.JsonFormatter"}
LOGGING["filters"] = {
    "context": {"()": "config.logging.ContextFilter"},
    "redact": {"()": "config.logging.RedactFilter"},
}
LOGGING["handlers"]["console"]["filters"] = ["context", "redact"]
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
# Workers log through LOGGING above (JSON, redaction) instead of Celery's own handler.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Route by task name (a task's own queue= stays the default); senders pass queue= per
# channel family at enqueue time (notifications.models.CHANNEL_QUEUE).
CELERY_TASK_ROUTES = {
    # Real-time rescoring must not queue behind the hourly batch's chunks (an exact
    # name wins over the pattern below).
    "churnapp.rescore_leads": {"queue": "interventions"},
    "churnapp.rescore_*": {"queue": "scoring"},
    "churnapp.retrain_*": {"queue": "scoring"},
    "churnapp.webhook_process": {"queue": "webhooks"},
    "interventions.*": {"queue": "interventions"},
    "ops.*": {"queue": "default"},
    "system.*": {"queue": "default"},
}
CELERY_BEAT_SCHEDULE["ops-heartbeat"] = {
    "task": "ops.heartbeat",
    "schedule": OPS_HEARTBEAT_SECONDS,
    "options": {"queue": "default", "expires": OPS_HEARTBEAT_SECONDS * 2},
}

# --- Tracking -------------------------------------------------------------------------
# Raw lifecycle events are purged after this many days (a tenant's TrackingSettings row
# overrides it); the daily rollups are kept and answer analytics over old periods.
TRACKING_RETENTION_DAYS = env.int("TRACKING_RETENTION_DAYS", default=180)
# The nightly rollup also restates this many days before yesterday (late receipts/outcomes).
TRACKING_ROLLUP_RESTATE_DAYS = env.int("TRACKING_ROLLUP_RESTATE_DAYS", default=7)
# An impact report with fewer ended episodes than this in either arm prints no number.
TRACKING_MIN_ARM_SIZE = env.int("TRACKING_MIN_ARM_SIZE", default=30)
# Cost of one sent message when the provider did not report it: {channel: {provider or
# "default": unit}} or {channel: unit}, in the tenant's currency.
TRACKING_MESSAGE_COSTS = env.json(
    "TRACKING_MESSAGE_COSTS",
    default={
        "sms": {"default": "0.0079", "twilio": "0.0083", "ghl": "0.0079"},
        "email": {"default": "0.0010"},
        "push": "0",
        "in_app": "0",
        "agent_alert": "0",
        "ghl_workflow": "0",
        "ghl_task": "0",
    },
)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["TrackingEventKindEnum"] = "tracking.models.EventKind"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["ActivityKindEnum"] = "churnapp.models.ActivityKind"
# The original brief's goals, shown beside measured values and never used in a calculation.
TRACKING_BRIEF_TARGETS = {"churn_rate_before": 0.35, "churn_rate_goal": 0.20}
CELERY_BEAT_SCHEDULE["tracking-daily"] = {
    "task": "tracking.daily",
    "schedule": crontab(hour=0, minute=env.int("TRACKING_DAILY_MINUTE", default=30)),
    "options": {"queue": "default"},
}
# The intraday refresh rolls the running day up to (now - lag) this often, so a report
# reads only the facts since then from the live tables; 0 turns it off (reports then
# compute the whole running day live). The lag leaves open transactions time to commit.
TRACKING_TODAY_ROLLUP_SECONDS = env.int("TRACKING_TODAY_ROLLUP_SECONDS", default=300)
TRACKING_TODAY_ROLLUP_LAG_SECONDS = env.int("TRACKING_TODAY_ROLLUP_LAG_SECONDS", default=60)
if TRACKING_TODAY_ROLLUP_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["tracking-today"] = {
        "task": "tracking.today",
        "schedule": TRACKING_TODAY_ROLLUP_SECONDS,
        "options": {"queue": "default", "expires": TRACKING_TODAY_ROLLUP_SECONDS},
    }
