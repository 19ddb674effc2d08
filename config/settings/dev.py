"""The embedded default (``make run``): one process, embedded PostgreSQL, eager Celery."""

from .base import *  # noqa: F403

DEBUG = env.bool("DEBUG", default=True)  # noqa: F405
