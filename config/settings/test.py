"""pytest settings: the embedded default (or DATABASE_URL/REDIS_URL), fast hashing."""

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Unit tests run tasks in-process even when REDIS_URL is set; the integration stage of
# .ci/run drives a real worker.
CELERY_TASK_ALWAYS_EAGER = True
STREAM_BATCH_MS = 0
TANDEM_EAGER_IN_BACKGROUND = False
# Transactional tests flush the database, active embedding space included, while a live
# server process may still hold it: read it afresh on every search.
KNOWLEDGE_ACTIVE_SPACE_CACHE_S = 0
