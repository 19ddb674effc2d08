"""The Celery application. Queues: turns, actions, ingestion (see CELERY_TASK_ROUTES)."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("tandem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _warm_up(**kwargs):
    from knowledge.embeddings import warm_up_in_background

    warm_up_in_background()
