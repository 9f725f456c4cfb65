"""One settings module driven by environment variables; every default works for the embedded setup."""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from aigc_saas.deploy import proxy_ssl_header, refuse_insecure_secret_key, secret_key
from aigc_saas.env import env_bool, env_int, env_list, env_str
from aigc_saas.observability.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("AIGC_DATA_DIR", str(BASE_DIR / "var"))).resolve()

# Unset: a random key generated once into AIGC_DATA_DIR/secret_key (mode 600). A public or weak key refuses to
# start unless DJANGO_DEBUG is on.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or secret_key(DATA_DIR)
DEBUG = env_bool("DJANGO_DEBUG", False)
refuse_insecure_secret_key(SECRET_KEY, debug=DEBUG)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# HTTPS, for deployments behind TLS (all off for the embedded setup, which is plain HTTP on localhost).
# With these set, `manage.py check --deploy` is clean.
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env_str("DJANGO_SECURE_PROXY_SSL_HEADER", ""))
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes come over plain HTTP
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Admin login: this many failures from one address or for one username lock it out for the lockout time.
AIGC_ADMIN_LOGIN_MAX_FAILURES = env_int("AIGC_ADMIN_LOGIN_MAX_FAILURES", 5)
AIGC_ADMIN_LOGIN_LOCKOUT_SECONDS = env_int("AIGC_ADMIN_LOGIN_LOCKOUT_SECONDS", 900)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "aigc_saas.accounts",
    "aigc_saas.plugins",
    "aigc_saas.jobs",
    "aigc_saas.webhooks",
    "aigc_saas.observability",
    "aigc_saas.usage",
    "aigc_saas.audit",
    "aigc_saas.assets",
    *env_list(
        "AIGC_EXTRA_APPS", ["scenarios.core", "scenarios.marketing", "scenarios.ecommerce", "scenarios.education"]
    ),
]

AIGC_API_MOUNTS = env_list("AIGC_API_MOUNTS", ["scenarios.urls"])

MIDDLEWARE = [
    # Health probes and /metrics answer before host validation: probes come by IP or localhost.
    "aigc_saas.observability.middleware.ProbeMiddleware",
    "aigc_saas.observability.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "aigc_saas.middleware.StaticFiles",
    "aigc_saas.middleware.ApiBodySizeLimit",
    "aigc_saas.middleware.RefuseNulInRequest",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "aigc_saas.audit.middleware.AuditActor",
    "aigc_saas.accounts.middleware.RateLimitHeaders",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aigc_saas.urls"
WSGI_APPLICATION = "aigc_saas.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "aigc_saas" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Database: embedded SQLite unless DATABASE_URL names another (postgres://user@host:5432/db).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the workers write concurrently: WAL lets them read while one writes, and the writers
    # queue on a lock file (aigc_saas/db/sqlite3) instead of sleeping in SQLite's busy handler.
    DATABASES["default"]["ENGINE"] = "aigc_saas.db.sqlite3"
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if env_str("DATABASE_CONN_MAX_AGE", "") == "":
        # A thread keeps its SQLite connection: closing one after every job (Django's default, and what the
        # worker's waiting threads do to give PostgreSQL connections back) cost 5 ms of a job's 22 ms of worker
        # CPU, the close checkpointing the WAL. A file handle per thread is all it holds.
        DATABASES["default"]["CONN_MAX_AGE"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("AIGC_STATIC_ROOT", str(DATA_DIR / "static"))).resolve()
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("AIGC_MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()

# Artifacts go to local files unless an S3-compatible bucket is configured (needs `pip install aigc-saas[s3]`).
_s3_bucket = env_str("AIGC_S3_BUCKET", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if _s3_bucket:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            "endpoint_url": env_str("AIGC_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("AIGC_S3_REGION", "") or None,
            "default_acl": None,
            "querystring_auth": True,
        },
    }

# Request bodies over this size answer 413 with code `payload_too_large`.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("AIGC_MAX_BODY_BYTES", 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["aigc_saas.accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "aigc_saas.accounts.permissions.HasScope",
    ],
    "DEFAULT_PARSER_CLASSES": ["aigc_saas.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "aigc_saas.api.pagination.Pagination",
    "EXCEPTION_HANDLER": "aigc_saas.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "aigc_saas.accounts.throttling.KeyRateThrottle",
        "aigc_saas.accounts.throttling.SubmissionRateThrottle",
    ],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "aigc-saas API",
    "DESCRIPTION": "Submit text, image and audio generation jobs, follow them and fetch their results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JobStateEnum": "aigc_saas.jobs.models.JobState.choices"},
    # Each generator's params (asset inputs among them) as components, with drf-spectacular's own enum hook.
    # …then every API-key operation's 403 `insufficient_scope` and 429 `rate_limited` (accounts.schema).
    "POSTPROCESSING_HOOKS": [
        "aigc_saas.assets.openapi.add_generator_params",
        "aigc_saas.accounts.schema.document_limits",
        "aigc_saas.api.openapi_errors.document_errors",  # 400/401/404/413 from the layers before the views
    ],
    "OAS_VERSION": "3.1.0",  # JSON Schema 2020-12, what pydantic writes for plugin params
}

# Celery: Redis is the broker (a doorbell only: the Job row is the truth). Embedded default: the
# redis-server the run command starts on AIGC_EMBEDDED_REDIS_PORT.
AIGC_EMBEDDED_REDIS_PORT = env_int("AIGC_EMBEDDED_REDIS_PORT", 6390)
REDIS_URL = env_str("REDIS_URL", f"redis://127.0.0.1:{AIGC_EMBEDDED_REDIS_PORT}/0")
AIGC_JOB_TIME_LIMIT = env_int("AIGC_JOB_TIME_LIMIT", 900)
CELERY_BROKER_URL = REDIS_URL
# kombu's Redis transport with one crash fixed (see aigc_saas/broker.py); other schemes keep kombu's choice.
CELERY_BROKER_TRANSPORT = "aigc_saas.broker:Transport" if REDIS_URL.startswith("redis://") else None
# A broker that accepts connections but never answers must not hang a submission, a worker or beat: every
# broker call gives up after AIGC_BROKER_TIMEOUT seconds (the job row is committed first; the sweep rings later).
AIGC_BROKER_TIMEOUT = env_int("AIGC_BROKER_TIMEOUT", 2)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the hard time limit, so a long job is not redelivered to a second worker mid-run.
    "visibility_timeout": AIGC_JOB_TIME_LIMIT + 300,
    "socket_timeout": AIGC_BROKER_TIMEOUT,
    "socket_connect_timeout": AIGC_BROKER_TIMEOUT,
    "socket_keepalive": True,
    # A timed-out command is not sent again on the same call: the publish fails fast and the caller decides.
    "retry_on_timeout": False,
    "health_check_interval": 10,  # a consumer on a half-open connection reconnects within ~21 s
}
CELERY_BROKER_CONNECTION_TIMEOUT = AIGC_BROKER_TIMEOUT
# Every publish (doorbells, webhooks, run advances, beat) retries at most twice, quickly, then raises.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
# Celery's Django fixup closes a task thread's database connections after every task unless this is set; a job
# then reopened SQLite (and its pragmas) or reconnected to PostgreSQL each time. Here `CONN_MAX_AGE` decides, as
# for web requests: observability.worker's task_postrun runs Django's `close_old_connections` after each task.
CELERY_DB_REUSE_MAX = 2**31
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = AIGC_JOB_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = AIGC_JOB_TIME_LIMIT + 60
CELERY_TASK_DEFAULT_QUEUE = "control"
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-jobs": {"task": "aigc.requeue_stale_jobs", "schedule": env_int("AIGC_SWEEP_SECONDS", 15)},
    # The webhook outbox: attempts still pending after AIGC_WEBHOOK_RESEND_SECONDS are sent again.
    "resend-pending-webhooks": {"task": "aigc.resend_pending_webhooks", "schedule": env_int("AIGC_SWEEP_SECONDS", 15)},
    # Scenario recipe runs whose "job finished" doorbell was lost (task defined by the scenario apps).
    "advance-stale-runs": {"task": "scenarios.advance_stale_runs", "schedule": env_int("AIGC_SWEEP_SECONDS", 15)},
    "sweep-expired-assets": {"task": "aigc.sweep_expired_assets", "schedule": 3600},
}

# Queues that have workers in this deployment. A job goes to the first queue, in its plugin's device
# preference order, that is listed here (cuda/mps → "gpu", cpu → "cpu").
AIGC_QUEUES = env_list("AIGC_QUEUES", ["cpu"])
AIGC_BLOCKED_PLUGINS = env_list("AIGC_BLOCKED_PLUGINS", [])
AIGC_MAX_ATTEMPTS = env_int("AIGC_MAX_ATTEMPTS", 3)
AIGC_QUEUED_REDISPATCH_SECONDS = env_int("AIGC_QUEUED_REDISPATCH_SECONDS", 300)
AIGC_WEBHOOK_TIMEOUT = env_int("AIGC_WEBHOOK_TIMEOUT", 10)
AIGC_WEBHOOK_ALLOW_PRIVATE = env_bool("AIGC_WEBHOOK_ALLOW_PRIVATE", False)
AIGC_WEBHOOK_MAX_ATTEMPTS = env_int("AIGC_WEBHOOK_MAX_ATTEMPTS", 6)
AIGC_WEBHOOK_RESEND_SECONDS = env_int("AIGC_WEBHOOK_RESEND_SECONDS", 60)

# Input assets (uploads): each limit is refused before anything is stored, with its own error code.
AIGC_ASSET_MAX_BYTES = env_int("AIGC_ASSET_MAX_BYTES", 25 * 1024 * 1024)
AIGC_ASSET_MAX_PIXELS = env_int("AIGC_ASSET_MAX_PIXELS", 40_000_000)
AIGC_ASSET_MAX_AUDIO_SECONDS = env_int("AIGC_ASSET_MAX_AUDIO_SECONDS", 3600)
AIGC_ASSET_TENANT_MAX_BYTES = env_int("AIGC_ASSET_TENANT_MAX_BYTES", 2 * 1024**3)
# Assets no queued or running job references are deleted this long after their last upload or use.
AIGC_ASSET_RETENTION_HOURS = env_int("AIGC_ASSET_RETENTION_HOURS", 7 * 24)

# The serving engine and its event channel.
AIGC_REDIS_TIMEOUT = env_int("AIGC_REDIS_TIMEOUT", 2)  # connect/socket timeout of every Redis call we make
AIGC_LEASE_SECONDS = env_int("AIGC_LEASE_SECONDS", 30)  # a running job whose lease lapses is re-queued
AIGC_ENGINE_MAX_ROWS = env_int("AIGC_ENGINE_MAX_ROWS", 64)  # rows one engine decodes together at most
# A step-runner plugin's engine runs in a process of its own (its GIL to itself; generators/engine/process.py).
AIGC_ENGINE_PROCESS = env_bool("AIGC_ENGINE_PROCESS", True)
AIGC_MAX_STREAMS_PER_TENANT = env_int("AIGC_MAX_STREAMS_PER_TENANT", 100)  # open SSE streams per tenant
AIGC_STREAM_KEY_CHECK_SECONDS = env_int("AIGC_STREAM_KEY_CHECK_SECONDS", 5)  # an open stream re-checks its key
# After its first token, a stream reads its job's events at most this often (ms); what came meanwhile goes together.
AIGC_STREAM_INTERVAL_MS = env_int("AIGC_STREAM_INTERVAL_MS", 50)
AIGC_MAX_WAIT_SECONDS = env_int("AIGC_MAX_WAIT_SECONDS", 60)  # upper bound of `?wait=N` (GET /jobs/{id}, POST /jobs)
AIGC_WEB_THREADS = env_int("AIGC_WEB_THREADS", 16)  # threads per web process for sync views (aigc_saas/asgi_handler.py)
# OpenAI-compatible /v1: how long a call waits for its job, and how long an image `url` answer stays valid.
AIGC_OPENAI_WAIT_SECONDS = env_int("AIGC_OPENAI_WAIT_SECONDS", 600)
AIGC_OPENAI_URL_SECONDS = env_int("AIGC_OPENAI_URL_SECONDS", 3600)
AIGC_WORKER_CONCURRENCY = env_int("AIGC_WORKER_CONCURRENCY", 32)  # jobs one generation worker process holds at once
AIGC_CLAIM_BATCH = env_int("AIGC_CLAIM_BATCH", 32)  # most jobs one doorbell claims, when the engines have room
AIGC_WORKER_STALE_SECONDS = env_int("AIGC_WORKER_STALE_SECONDS", 90)  # a worker silent this long counts as gone
AIGC_NO_WORKER_FAIL_SECONDS = env_int("AIGC_NO_WORKER_FAIL_SECONDS", 900)  # queued with no live worker: fail
AIGC_IDEMPOTENCY_HOURS = env_int("AIGC_IDEMPOTENCY_HOURS", 48)  # how long an Idempotency-Key is remembered
AIGC_BATCH_MAX_JOBS = env_int("AIGC_BATCH_MAX_JOBS", 100)  # jobs one `POST /api/v1/jobs/batch` may carry

# Limits per API key, shared by every web process through Redis (a tenant's row can override the first three).
AIGC_RATE_LIMIT_PER_SECOND = env_int("AIGC_RATE_LIMIT_PER_SECOND", 20)
AIGC_RATE_LIMIT_BURST = env_int("AIGC_RATE_LIMIT_BURST", 40)
AIGC_SUBMISSIONS_PER_MINUTE = env_int("AIGC_SUBMISSIONS_PER_MINUTE", 120)
# Wrong API keys one client address may send per minute before its requests answer 429.
AIGC_AUTH_FAILURES_PER_MINUTE = env_int("AIGC_AUTH_FAILURES_PER_MINUTE", 20)
# Quotas a new tenant starts with (0: no limit); existing tenants keep theirs.
AIGC_DEFAULT_MAX_JOBS_PER_DAY = env_int("AIGC_DEFAULT_MAX_JOBS_PER_DAY", 1000) or None
AIGC_DEFAULT_MAX_ACTIVE_JOBS = env_int("AIGC_DEFAULT_MAX_ACTIVE_JOBS", 50) or None

# Observability: logs (plain or JSON lines, each naming its job and tenant) and Prometheus metrics.
AIGC_LOG_FORMAT = env_str("AIGC_LOG_FORMAT", "plain")
LOGGING = logging_config(env_str("AIGC_LOG_LEVEL", "INFO"), AIGC_LOG_FORMAT)
# Where the processes of one server share their metric samples (unless PROMETHEUS_MULTIPROC_DIR is set).
AIGC_METRICS_DIR = Path(env_str("AIGC_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()
AIGC_METRICS_PORT = env_int("AIGC_METRICS_PORT", 9540)  # a worker's exporter (0: none); the web serves /metrics
AIGC_METRICS_TOKEN = env_str("AIGC_METRICS_TOKEN", "")  # when set, /metrics needs `Authorization: Bearer <it>`
