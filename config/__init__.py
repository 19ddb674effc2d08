"""Project plumbing: settings, URLs, ASGI, Celery app and the shared base model."""

from .celery import app as celery_app

__all__ = ["celery_app"]
