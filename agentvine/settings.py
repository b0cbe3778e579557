"""AgentVine settings, all driven by the environment.

Every value has a safe local default so a fresh checkout runs on the embedded
default (SQLite file + a local Redis). Production sets DATABASE_URL to
PostgreSQL, a real SECRET_KEY, DEBUG=false and ALLOWED_HOSTS.
"""

import json
import math
import shlex
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from agentvine.brokers import celery_broker_settings

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("AGENTVINE_VAR_DIR", default=str(BASE_DIR / "var")))

VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()

# Off unless asked for: scripts/up turns it on for local development.
DEBUG = env.bool("DEBUG", default=False)
# Good for local development only: it is in this public file, so anyone can
# sign what the server trusts with it. Refused unless DEBUG is on.
DEVELOPMENT_SECRET_KEY = "agentvine-local-development-key-change-me-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
ERR_DEVELOPMENT_SECRET_KEY = (
    "SECRET_KEY is the development key from agentvine/settings.py while DEBUG is off: "
    "set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))')"
)
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(ERR_DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTP security -------------------------------------------------------------
# Served over HTTPS (directly or behind a proxy that terminates TLS): redirect
# plain HTTP, secure cookies, HSTS. `manage.py check --deploy` is clean with
# DEBUG off, a real SECRET_KEY, ALLOWED_HOSTS and AGENTVINE_HTTPS on.
AGENTVINE_HTTPS = env.bool("AGENTVINE_HTTPS", default=False)
SECURE_SSL_REDIRECT = AGENTVINE_HTTPS
SESSION_COOKIE_SECURE = AGENTVINE_HTTPS
CSRF_COOKIE_SECURE = AGENTVINE_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if AGENTVINE_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
if env.bool("AGENTVINE_BEHIND_TLS_PROXY", default=False):
    # Only behind a proxy that sets this header itself on every request.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Empty: agentvine/headers.py's policy (no inline script or style anywhere in the console).
AGENTVINE_CONTENT_SECURITY_POLICY = env.str("AGENTVINE_CONTENT_SECURITY_POLICY", default="")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "channels",
    "agentvine",
    "tasks_app",
    "queue_app",
    "workers_app",
    "chat_app",
]

MIDDLEWARE = [
    # /healthz and /readyz, answered before host validation (agentvine/health.py).
    "agentvine.health.HealthProbeMiddleware",
    # A server span per request when OTEL_EXPORTER_OTLP_ENDPOINT is set (agentvine/tracing.py).
    "agentvine.tracing.TraceMiddleware",
    # Binds a request id to every log line of the request (agentvine/logging.py).
    "agentvine.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy (agentvine/headers.py).
    "agentvine.headers.SecurityHeadersMiddleware",
    # Serves static files from the ASGI app itself (daphne has no static
    # server); finders mean no collectstatic step for the embedded default.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The chain runs synchronously, with the view, in the request's thread
    # (agentvine/asgi_handler.py). Nothing above this one reads the body, so
    # an oversized one is refused before any parser.
    "agentvine.api.ApiBodyLimitMiddleware",
    # Last, so it sees every view's exception: a lost database is a 503.
    "agentvine.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "agentvine.urls"

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
                "agentvine.context_processors.console",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "agentvine.asgi.application"

# The embedded default is an SQLite file; PostgreSQL is the production database
# and the one the test suite runs against.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'agentvine.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: wait for the write lock instead of
    # failing, and take it at BEGIN so a read-then-write never deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.bool("DATABASE_POOL", default=False):
    # The web process (agentvine/asgi.py turns this on): under ASGI every
    # request runs in a thread of its own, so per-thread persistent
    # connections would still mean one new PostgreSQL backend per request.
    # A pool per process hands the same few connections around and checks
    # each before handing it out, so a restarted PostgreSQL fails no request.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 1, "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10), "timeout": 10}
    }
else:
    # Celery slots, beat and commands keep one connection per thread across
    # tasks (CELERY_DB_REUSE_MAX below), checked before each task
    # (workers_app/slots.py). No pool here: one opened before the prefork
    # fork would share its sockets with every child.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=300)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Parallel test runs (and helpers running suites side by side) need their own
# test database name.
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}
# PostgreSQL's plan_cache_mode as a libpq startup option (workers_app/slots.py changes it).
PLAN_CACHE_MODE_OPTION = "-c plan_cache_mode="
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend with a health check that needs no round trip (agentvine/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "agentvine.postgresql"
    # Server-side parameters and prepared statements: a statement the process
    # has sent a few times is planned once per connection, not on every call
    # (planning was most of PostgreSQL's CPU per work-order lifecycle). Set
    # DATABASE_PREPARE_THRESHOLD to 0 behind a pooler that cannot keep
    # prepared statements (PgBouncer before 1.21 in transaction mode).
    _threshold = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
    if env.bool("DATABASE_TRANSACTION_POOLER", default=False):
        # Behind PgBouncer in transaction mode (README "PgBouncer"): each
        # transaction may get another server session, so nothing may outlive
        # one: no prepared statements, no startup options, no WITH HOLD
        # cursors (Django's .iterator()).
        _threshold = 0
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=_threshold if _threshold > 0 else None
    )
    if _threshold > 0:
        # A prepared statement is still planned with its parameters on every
        # run (parsing is what is saved): pages, admin, API and guardians run
        # ranges and text searches whose generic plan can be hundreds of times
        # slower. Agent slots switch to "auto" (workers_app/slots.py): their
        # statements reach one row by its key, where the generic plan is the
        # right one and planning each run would be most of their database CPU.
        # Set when the session starts (libpq's options), so it costs no round trip.
        _plan_cache_mode = env.str("DATABASE_PLAN_CACHE_MODE", default="force_custom_plan")
        if _plan_cache_mode:
            DATABASES["default"]["OPTIONS"]["options"] = f"{PLAN_CACHE_MODE_OPTION}{_plan_cache_mode}"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

# --- Channels ---------------------------------------------------------------
# Redis pub/sub: one PUBLISH per group, and each daphne process fans it out
# to its own sockets in memory. The list-based RedisChannelLayer pays one
# Redis round trip per socket per event, which caps a 50-socket activity feed
# at a few thousand frames/s. Pub/sub is at-most-once; what a socket misses
# it replays from the event log (agentvine.events). Pub/sub channels ignore
# the Redis DB number, so the prefix carries it to keep databases apart.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"asgi{REDIS_URL.rsplit('/', 1)[-1]}:"},
    }
}

# --- REST framework -----------------------------------------------------------
# Token first: its WWW-Authenticate challenge makes anonymous requests a 401.
# Every endpoint is operator-only unless its view says otherwise.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "workers_app.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["workers_app.authentication.IsOperator"],
    "DEFAULT_THROTTLE_CLASSES": ["agentvine.api_policies.ClientRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "agentvine.api_errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "agentvine.api_policies.Pagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Requests per operator or worker (per IP when anonymous); beyond it, 429.
AGENTVINE_API_RATE = env.str("AGENTVINE_API_RATE", default="6000/min")
# A pull worker's heartbeat and idle claim poll are answered in front of
# Django's chain, with the same auth, throttle and answer
# (workers_app/pull_fast_path.py); false sends them through Django.
AGENTVINE_PULL_FAST_PATH = env.bool("AGENTVINE_PULL_FAST_PATH", default=True)
# Bodies above this are refused with 413 (Django's own limit, applied to the API too).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)
# Throttling counts in Redis (agentvine/api_policies.py), one budget per
# client across every web process.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SPECTACULAR_SETTINGS = {
    "TITLE": "AgentVine API",
    "DESCRIPTION": "Authenticate with `Authorization: Token <key>` (operator API token or worker token) "
    "or a signed-in browser session. Writes accept an `Idempotency-Key` header.",
    "VERSION": "1.0.0",
    "SERVE_PERMISSIONS": ["workers_app.authentication.IsOperatorOrWorker"],
    "SERVE_AUTHENTICATION": [
        "workers_app.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    # The agent's answer long poll is an async Django view, which drf-spectacular
    # cannot see: documented here (chat_app/apis.py agent_question_wait).
    "APPEND_PATHS": {
        "/api/v1/chat/agent/questions/{question_id}/": {
            "get": {
                "operationId": "chat_agent_question_wait",
                "summary": "The asking agent waits for the answer (long poll, agent token only)",
                "tags": ["chat"],
                "parameters": [
                    {
                        "name": "question_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    },
                    {"name": "wait", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0}},
                ],
                "security": [{"agentToken": []}],
                "responses": {
                    code: {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentAnswer"}}},
                    }
                    for code, description in (
                        ("200", "Answered"),
                        ("202", "Not answered yet"),
                        ("401", "Not this run's agent token"),
                        ("404", "No such question of this run"),
                        ("410", "The work order ended unanswered"),
                        ("503", "The server is stopping: ask again after Retry-After"),
                    )
                },
            }
        }
    },
    "APPEND_COMPONENTS": {
        "schemas": {
            "AgentAnswer": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "description": "answered, pending or closed"},
                    "answer": {"type": "string"},
                    "detail": {"type": "string"},
                },
                "additionalProperties": False,
            }
        },
        "securitySchemes": {"agentToken": {"type": "apiKey", "in": "header", "name": "Authorization"}},
    },
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks_app.models.TaskStatus",
        "NotificationChannelKindEnum": "chat_app.models.ChannelKind",
        "NotificationEventEnum": "chat_app.models.NotificationEvent",
        "WorkOrderStatusEnum": "queue_app.models.WorkOrderStatus",
        "WorkerStatusEnum": "workers_app.models.WorkerStatus",
        "SessionStatusEnum": "workers_app.models.SessionStatus",
        "ExecutionStatusEnum": "queue_app.models.ExecutionStatus",
        "MessageKindEnum": "chat_app.models.MessageKind",
        "SenderKindEnum": "chat_app.models.SenderKind",
        "WorkOrderKindEnum": "queue_app.models.WorkOrderKind",
    },
}

# --- Celery -------------------------------------------------------------------
# Postgres is the truth; a Celery message is only a doorbell carrying a work
# order id. These settings make a high-priority doorbell wait for at most one
# running low-priority job (measured in bench/priority.py).
AGENTVINE_MAX_RUN_SECONDS = env.int("AGENTVINE_MAX_RUN_SECONDS", default=3600)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup otherwise closes every database connection before and
# after each task: one new PostgreSQL backend per work order. Reused instead,
# checked before each task (workers_app/slots.py), recycled after this many.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_DEFAULT_QUEUE = "default"
# Agents consume high,default,low; the guardians have their own queue so a
# fleet whose every slot runs a long agent still gets its guardians run (by
# the small `-Q guardians` worker started next to beat).
AGENT_QUEUES = ("high", "default", "low")
GUARDIAN_QUEUE = "guardians"
CELERY_TASK_ROUTES = {"workers_app.guard_*": {"queue": GUARDIAN_QUEUE}}
# Queues, acknowledgement and transport options of the broker in use: Redis,
# or RabbitMQ's durable quorum queues with publisher confirms (agentvine/brokers.py).
globals().update(
    celery_broker_settings(
        CELERY_BROKER_URL,
        agent_queues=AGENT_QUEUES,
        guardian_queue=GUARDIAN_QUEUE,
        max_run_seconds=AGENTVINE_MAX_RUN_SECONDS,
    )
)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "prune-live-events": {"task": "chat_app.prune_live_events", "schedule": 300.0},
}
CELERY_TIMEZONE = TIME_ZONE

# --- AgentVine ------------------------------------------------------------------
AGENTVINE_WORKSPACE_ROOT = Path(env.str("AGENTVINE_WORKSPACE_ROOT", default=str(VAR_DIR / "workspaces")))
# The server's bare repositories of every task's results (tasks_app/results.py):
# shared by the web processes when there are several (compose mounts a volume).
AGENTVINE_RESULTS_ROOT = Path(env.str("AGENTVINE_RESULTS_ROOT", default=str(VAR_DIR / "results")))
AGENTVINE_RESULTS_MAX_BUNDLE_BYTES = env.int("AGENTVINE_RESULTS_MAX_BUNDLE_BYTES", default=512 * 1024 * 1024)
# Author and committer of the commit that ends every run (the workspace snapshot).
AGENTVINE_GIT_AUTHOR_NAME = env.str("AGENTVINE_GIT_AUTHOR_NAME", default="AgentVine")
AGENTVINE_GIT_AUTHOR_EMAIL = env.str("AGENTVINE_GIT_AUTHOR_EMAIL", default="agentvine@localhost")
# The review loop (tasks_app/review.py). Approving merges a task's branch into
# its base (AGENTVINE_MERGE_BASE_BRANCH, else the origin's default branch;
# "main" for a task without a repository) in the server's repository, and
# pushes it to the origin when the repository URL matches one of PUSH's
# shell-style patterns. An HTTPS push authenticates with the token in the
# secret PUSH_SECRET names (read from $NAME or the file $NAME_FILE names, at
# push time; never stored or logged).
AGENTVINE_MERGE_BASE_BRANCH = env.str("AGENTVINE_MERGE_BASE_BRANCH", default="")
AGENTVINE_RESULTS_PUSH = env.list("AGENTVINE_RESULTS_PUSH", default=[])
AGENTVINE_RESULTS_PUSH_SECRET = env.str("AGENTVINE_RESULTS_PUSH_SECRET", default="")
# "Open pull request" (tasks_app/forges.py): GitHub's REST API, or Gitea's /
# Forgejo's compatible one (type "gitea"); the API address is found from the
# repository URL unless set; the token comes from the secret TOKEN_SECRET names.
AGENTVINE_FORGE_TYPE = env.str("AGENTVINE_FORGE_TYPE", default="")
AGENTVINE_FORGE_API_URL = env.str("AGENTVINE_FORGE_API_URL", default="")
AGENTVINE_FORGE_TOKEN_SECRET = env.str("AGENTVINE_FORGE_TOKEN_SECRET", default="GITHUB_TOKEN")
# Repositories a task may name (tasks_app/repositories.py): shell-style
# patterns of URLs. Local paths and file:// only when ALLOW_LOCAL is on
# (scripts/up turns it on for its local default), never the platform's data.
AGENTVINE_REPOSITORY_ALLOW = env.list("AGENTVINE_REPOSITORY_ALLOW", default=["https://*", "ssh://*", "git@*"])
AGENTVINE_REPOSITORY_ALLOW_LOCAL = env.bool("AGENTVINE_REPOSITORY_ALLOW_LOCAL", default=False)
AGENTVINE_HEARTBEAT_SECONDS = env.float("AGENTVINE_HEARTBEAT_SECONDS", default=3.0)
# --- Guardians (workers_app/guardians.py, scheduled by django-celery-beat) ---
# A slot whose heartbeat is older than this is offline and its work requeued.
AGENTVINE_STALLED_WORKER_SECONDS = env.float(
    "AGENTVINE_STALLED_WORKER_SECONDS", default=3 * AGENTVINE_HEARTBEAT_SECONDS
)
# Queued work whose doorbell rang this long ago (a Redis restart or flush may
# have lost it) is dispatched again.
AGENTVINE_LOST_DISPATCH_SECONDS = env.float("AGENTVINE_LOST_DISPATCH_SECONDS", default=120.0)
# Keep-alive policy for agent sessions.
AGENTVINE_SESSION_IDLE_SECONDS = env.float("AGENTVINE_SESSION_IDLE_SECONDS", default=30 * 60.0)
AGENTVINE_SESSION_MAX_AGE_SECONDS = env.float("AGENTVINE_SESSION_MAX_AGE_SECONDS", default=60 * 60.0)
# A host's pending workspace cleanups (workers_app.host_work) wait for it this
# long; past it, with no slot of that node alive, the idle-sessions guardian
# deletes them and records a host.cleanups_expired event naming the tasks.
AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS = env.float("AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS", default=7 * 24 * 3600.0)
# Rows one guardian run handles at most; the next run takes the rest.
AGENTVINE_GUARDIAN_BATCH = env.int("AGENTVINE_GUARDIAN_BATCH", default=100)
# Concurrency keys: at most N active runs of a key at once, whatever the
# slots (a provider's limit). A work order's key is its executor profile's
# "concurrency_key" (default: the profile's name); the limit comes from here
# ("claude=3,codex=2") or the profile's "concurrency". Enforced at claim time.
AGENTVINE_CONCURRENCY_LIMITS = {
    key.strip(): int(limit)
    for key, limit in env.dict("AGENTVINE_CONCURRENCY_LIMITS", default={}).items()
    if key.strip()
}
# Priority preemption: interrupt low work when high work waits on a full fleet.
AGENTVINE_PREEMPTION_ENABLED = env.bool("AGENTVINE_PREEMPTION_ENABLED", default=True)
# A work order is preempted at most this many times, so low work can't starve.
AGENTVINE_PREEMPT_MAX = env.int("AGENTVINE_PREEMPT_MAX", default=2)
# Aging (queue_app.fairness): queued work that has waited this long moves up
# a priority level, and again after as long once more, so low work waits at
# most twice this (plus a guardian interval) under a constant stream of high
# work. 0 turns aging off (strict priorities).
AGENTVINE_PRIORITY_AGING_SECONDS = env.float("AGENTVINE_PRIORITY_AGING_SECONDS", default=600.0)
# Rate limits (queue_app.rate_limits): a key refused without a usable reset
# time waits this long, doubling with each such refusal in a row, up to the max.
AGENTVINE_RATE_LIMIT_BACKOFF_SECONDS = env.float("AGENTVINE_RATE_LIMIT_BACKOFF_SECONDS", default=60.0)
AGENTVINE_RATE_LIMIT_BACKOFF_MAX_SECONDS = env.float("AGENTVINE_RATE_LIMIT_BACKOFF_MAX_SECONDS", default=1800.0)
# Budgets (queue_app.budgets), in US dollars; unset means no limit. A new
# task's budget: one figure for every type, or per type ("feature=5,docs=1",
# "default=2" for the types not named). Operators and the whole platform
# have a budget per day (TIME_ZONE's days): work that would pass it waits for
# the next day. AGENTVINE_BUDGET_EXCEEDED: a task whose budget is spent is
# "pause"d until its budget is raised, or "fail"s.
AGENTVINE_TASK_BUDGET_USD = env.str("AGENTVINE_TASK_BUDGET_USD", default="")
AGENTVINE_OPERATOR_DAILY_BUDGET_USD = env.float("AGENTVINE_OPERATOR_DAILY_BUDGET_USD", default=None)
AGENTVINE_DAILY_BUDGET_USD = env.float("AGENTVINE_DAILY_BUDGET_USD", default=None)
AGENTVINE_BUDGET_EXCEEDED = env.str("AGENTVINE_BUDGET_EXCEEDED", default="pause")
if AGENTVINE_BUDGET_EXCEEDED not in ("pause", "fail"):
    raise ImproperlyConfigured(f"AGENTVINE_BUDGET_EXCEEDED must be pause or fail, not {AGENTVINE_BUDGET_EXCEEDED!r}")
# After a cooperative interrupt, how long an agent gets before a hard kill.
AGENTVINE_INTERRUPT_GRACE_SECONDS = env.float("AGENTVINE_INTERRUPT_GRACE_SECONDS", default=5.0)
# On a warm shutdown a running agent gets this long to finish before it is
# interrupted and its work requeued for another worker.
AGENTVINE_SHUTDOWN_GRACE_SECONDS = env.float("AGENTVINE_SHUTDOWN_GRACE_SECONDS", default=30.0)
AGENTVINE_MAX_RETRIES = env.int("AGENTVINE_MAX_RETRIES", default=3)
# Subtasks the agent of one task may create (create_subtask, agentvine-subtask).
AGENTVINE_MAX_SUBTASKS = env.int("AGENTVINE_MAX_SUBTASKS", default=20)
# How long a runner rides out PostgreSQL being away (a restart, a failover):
# the agent goes on and its writes wait; past this the run gives up.
AGENTVINE_DATABASE_RETRY_SECONDS = env.float("AGENTVINE_DATABASE_RETRY_SECONDS", default=60.0)
# A run's lease: its runner renews it every third of this; expired, the run
# has lost its runner (crashed, its database connection gone for good) and the
# stalled-worker guardian takes its work back, even while the slot heartbeats.
AGENTVINE_LEASE_SECONDS = env.float("AGENTVINE_LEASE_SECONDS", default=15.0)
# Self-fencing: a run that could not renew its lease for this long stops its
# agent by itself and abandons the run, touching nothing, before any guardian
# can requeue the work (so the work never runs on two hosts at once). A
# guardian requeues a silent host's work once its last heartbeat is
# AGENTVINE_STALLED_WORKER_SECONDS old, at the earliest stalled − heartbeat
# after its last renewal, or when the lease expires: keep fence ≤ stalled −
# heartbeat and fence < lease (the defaults: 6 ≤ 9 − 3, 6 < 15). The lease is
# renewed every quarter of the fence (or third of the lease, if shorter); the
# agent is gone within the fence of the last renewal that landed.
AGENTVINE_FENCE_SECONDS = env.float(
    "AGENTVINE_FENCE_SECONDS",
    default=min(AGENTVINE_STALLED_WORKER_SECONDS - AGENTVINE_HEARTBEAT_SECONDS, AGENTVINE_LEASE_SECONDS / 2),
)
# A PostgreSQL connection that hears nothing back for this long while it
# waits is dropped, and its query fails (Django's OperationalError, which the
# runner rides out and retries). Without it a process whose host is cut off
# waits for ever in a query that was in flight (the socket stays open, nothing
# is left to send), holding its slot through the fence and long after the
# link returns. TCP keepalives probe a silent wait from a third of this;
# TCP_USER_TIMEOUT ends the connection once probes (or data) go unacknowledged
# this long; a new connection gives up as soon. The server's kernel answers
# probes while a query is busy, so a long query is not cut. 0 turns it off.
AGENTVINE_DATABASE_DEAD_LINK_SECONDS = env.float(
    "AGENTVINE_DATABASE_DEAD_LINK_SECONDS", default=AGENTVINE_FENCE_SECONDS
)


def database_dead_link_options(seconds):
    """libpq's connection options that drop a connection silent for ``seconds``."""
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, int(seconds / 3)),
        "keepalives_interval": max(1, int(seconds / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": int(seconds * 1000),
        "connect_timeout": max(2, math.ceil(seconds)),
    }


if DATABASES["default"]["ENGINE"] == "agentvine.postgresql" and AGENTVINE_DATABASE_DEAD_LINK_SECONDS > 0:
    DATABASES["default"]["OPTIONS"].update(database_dead_link_options(AGENTVINE_DATABASE_DEAD_LINK_SECONDS))

# Attempts lost with their worker (process killed, host cut off) before the
# work is declared poison and ends dead; they spend no retry.
AGENTVINE_MAX_LOST_ATTEMPTS = env.int("AGENTVINE_MAX_LOST_ATTEMPTS", default=3)
AGENTVINE_RETRY_BACKOFF_BASE = env.float("AGENTVINE_RETRY_BACKOFF_BASE", default=5.0)
AGENTVINE_RETRY_BACKOFF_MAX = env.float("AGENTVINE_RETRY_BACKOFF_MAX", default=600.0)
# Output is persisted in chunks: whichever comes first, this many seconds or
# this many characters since the last write.
AGENTVINE_OUTPUT_FLUSH_SECONDS = env.float("AGENTVINE_OUTPUT_FLUSH_SECONDS", default=0.5)
AGENTVINE_OUTPUT_FLUSH_CHARS = env.int("AGENTVINE_OUTPUT_FLUSH_CHARS", default=64 * 1024)
AGENTVINE_OUTPUT_TAIL_CHARS = 4000
# A running agent silent this long: flagged "quiet for 12 min" in the console,
# and the agent_quiet notification (chat_app/notifications.py).
AGENTVINE_QUIET_WARNING_SECONDS = env.float("AGENTVINE_QUIET_WARNING_SECONDS", default=600.0)
# A busy process sends each live-event group at most one layer message per
# this many seconds; what is committed meanwhile goes out together, as one
# WebSocket frame per socket (agentvine.events). An event after a quiet spell
# goes at once.
AGENTVINE_EVENTS_LINGER_SECONDS = env.float("AGENTVINE_EVENTS_LINGER_SECONDS", default=0.05)
# Each web process checks its layer subscription this often (one PUBLISH and
# its echo, whatever the number of sockets); sockets replay what a lost
# subscription missed (agentvine/layer_watch.py).
AGENTVINE_LIVE_CHECK_SECONDS = env.float("AGENTVINE_LIVE_CHECK_SECONDS", default=2.0)

# Executor profiles: a task names one; "demo" is the default so a fresh
# install visibly does work. A profile's "type" picks the executor:
#   command  "command": argv template ({prompt} {workspace} {task_id}
#            {work_order_id} {session_id} {python} are substituted)
# Every profile may add "env" (literal variables for the agent) and "secrets"
# (names of variables the worker reads from its environment or NAME_FILE and
# hands to the agent, masked in its output): workers_app/executors/environment.py.
#   claude   "binary" (path, or an argv prefix list), "model", "args"
#   codex    "binary", "model", "args", "usd_per_million_input/output"
#   openai   "base_url" (…/v1), "model", "api_key_env" (name of the variable
#            holding the key) or "api_key", "max_turns", "usd_per_million_*"
# Add or override profiles with AGENTVINE_EXECUTORS_JSON (a JSON object).
AGENTVINE_OPENAI_BASE_URL = env.str("AGENTVINE_OPENAI_BASE_URL", default="http://127.0.0.1:8000/v1")
AGENTVINE_OPENAI_MODEL = env.str("AGENTVINE_OPENAI_MODEL", default="")
AGENTVINE_EXECUTORS = {
    # Unattended runs cannot answer permission prompts; acceptEdits lets the
    # agent edit its own workspace. Widen with AGENTVINE_CLAUDE_ARGS.
    "claude": {
        "type": "claude",
        "binary": env.str("AGENTVINE_CLAUDE_BINARY", default="claude"),
        "model": env.str("AGENTVINE_CLAUDE_MODEL", default=""),
        # Split like a shell would (quotes keep inline JSON whole), not on commas.
        "args": shlex.split(env.str("AGENTVINE_CLAUDE_ARGS", default="--permission-mode acceptEdits")),
        # Provider keys reach only the profiles that name them.
        "secrets": [name for name in env.list("AGENTVINE_CLAUDE_SECRETS", default=["ANTHROPIC_API_KEY"]) if name],
        # Tool calls the permission mode does not allow are asked of a human.
        "permission_prompts": env.bool("AGENTVINE_CLAUDE_PERMISSION_PROMPTS", default=False),
    },
    "codex": {
        "type": "codex",
        "binary": env.str("AGENTVINE_CODEX_BINARY", default="codex"),
        "model": env.str("AGENTVINE_CODEX_MODEL", default=""),
        "args": shlex.split(env.str("AGENTVINE_CODEX_ARGS", default="--full-auto")),
        "secrets": [name for name in env.list("AGENTVINE_CODEX_SECRETS", default=["OPENAI_API_KEY"]) if name],
    },
    "openai": {
        "type": "openai",
        "base_url": AGENTVINE_OPENAI_BASE_URL,
        "model": AGENTVINE_OPENAI_MODEL,
        "api_key_env": "OPENAI_API_KEY",
    },
    "demo": {
        "type": "command",
        "command": [
            "{python}",
            str(BASE_DIR / "workers_app" / "demo_agent.py"),
            "--workspace",
            "{workspace}",
            "--prompt-file",
            "{prompt_file}",
        ],
        # An agent sees only what its profile declares (executors/environment.py).
        "env": {
            name: value
            for name in ("AGENTVINE_DEMO_STEPS", "AGENTVINE_DEMO_STEP_SECONDS")
            if (value := env.str(name, default=""))
        },
    },
}
AGENTVINE_EXECUTORS.update(json.loads(env.str("AGENTVINE_EXECUTORS_JSON", default="{}")))
AGENTVINE_DEFAULT_EXECUTOR = env.str("AGENTVINE_DEFAULT_EXECUTOR", default="demo")

# Live layer and human in the loop.
# Where agents reach this server (the `agentvine-ask` command and the MCP
# server call it with their per-work-order token).
# Unset, it is this installation's own web address: the port daphne serves
# (PORT, which scripts/up exports to every process it starts) on loopback.
AGENTVINE_API_URL = env.str("AGENTVINE_API_URL", default=f"http://127.0.0.1:{env.int('PORT', default=8000)}")
# The longest task text (title and description) an agent may be given: a
# task over it is refused at creation (400). Prompts reach agents through
# stdin or a file, never the command line, so any size the body limit
# (DATA_UPLOAD_MAX_MEMORY_SIZE) lets through can run.
AGENTVINE_MAX_PROMPT_CHARS = env.int("AGENTVINE_MAX_PROMPT_CHARS", default=2_000_000)
# An agent's ask client that never reached the API gives up after this long,
# and the run fails with the reason (a wrong AGENTVINE_API_URL, a firewall).
AGENTVINE_ASK_CONNECT_SECONDS = env.float("AGENTVINE_ASK_CONNECT_SECONDS", default=30.0)

# Notifications (chat_app/notifications.py): links in them point here.
AGENTVINE_PUBLIC_URL = env.str("AGENTVINE_PUBLIC_URL", default=AGENTVINE_API_URL)
AGENTVINE_NOTIFY_MAX_ATTEMPTS = env.int("AGENTVINE_NOTIFY_MAX_ATTEMPTS", default=6)
AGENTVINE_NOTIFY_BACKOFF_SECONDS = env.float("AGENTVINE_NOTIFY_BACKOFF_SECONDS", default=5.0)
AGENTVINE_NOTIFY_TIMEOUT_SECONDS = env.float("AGENTVINE_NOTIFY_TIMEOUT_SECONDS", default=10.0)
# Slack signs the requests of a slash command with this (chat/slack/).
AGENTVINE_SLACK_SIGNING_SECRET = env.str("AGENTVINE_SLACK_SIGNING_SECRET", default="")
# Email through Django's backend: SMTP at EMAIL_HOST:EMAIL_PORT.
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="agentvine@localhost")
# Reconnecting clients catch up from the event log; older events are pruned.
AGENTVINE_LIVE_EVENT_RETENTION_HOURS = env.float("AGENTVINE_LIVE_EVENT_RETENTION_HOURS", default=24.0)
# How long one long-poll for an answer waits before the agent asks again.
AGENTVINE_ASK_POLL_SECONDS = env.float("AGENTVINE_ASK_POLL_SECONDS", default=25.0)
# On SIGTERM the web answers waiting asks (503, Retry-After) and stops once its
# HTTP requests are done, or after this many seconds (agentvine/asgi_shutdown.py).
AGENTVINE_WEB_SHUTDOWN_GRACE_SECONDS = env.float("AGENTVINE_WEB_SHUTDOWN_GRACE_SECONDS", default=5.0)

# --- Observability (agentvine/health.py, metrics.py, logging.py) ---------------
# Each part /readyz asks must answer within this many seconds.
AGENTVINE_READY_TIMEOUT_SECONDS = env.float("AGENTVINE_READY_TIMEOUT_SECONDS", default=2.0)
# Bearer token a Prometheus scraper sends to /metrics (signed-in operators need none).
AGENTVINE_METRICS_TOKEN = env.str("AGENTVINE_METRICS_TOKEN", default="")
# Totals over the whole history (histograms, tokens, cost) scan every
# execution: a web process recomputes them at most this often (bench/metrics_scrape.py).
AGENTVINE_METRICS_TOTALS_SECONDS = env.float("AGENTVINE_METRICS_TOTALS_SECONDS", default=30.0)
# A Celery worker's own /metrics (the metrics token only): off when 0.
AGENTVINE_WORKER_METRICS_PORT = env.int("AGENTVINE_WORKER_METRICS_PORT", default=0)
AGENTVINE_WORKER_METRICS_ADDR = env.str("AGENTVINE_WORKER_METRICS_ADDR", default="127.0.0.1")
# "json": one JSON object per log line, with the ids of the request or run it
# belongs to; "text" (the default): plain lines.
AGENTVINE_LOG_FORMAT = env.str("AGENTVINE_LOG_FORMAT", default="text").lower()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "[%(asctime)s: %(levelname)s/%(name)s] %(message)s"},
        "json": {"()": "agentvine.logging.JsonFormatter"},
    },
    "filters": {"routine": {"()": "agentvine.logging.RoutineFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if AGENTVINE_LOG_FORMAT == "json" else "text",
            "filters": ["routine"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Django logs every 4xx as a WARNING ("Unauthorized: /api/v1/queue/"):
        # noise, and CPU under a flood of bad requests; the access line already
        # has the status. 5xx (ERROR) still reach the log.
        "django.request": {"level": "ERROR"},
        # Django's own console handler (DEBUG only) printed its lines a second
        # time, plain; they reach the root handler, in the chosen format.
        "django": {"handlers": [], "propagate": True},
    },
}
