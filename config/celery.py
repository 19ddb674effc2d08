"""The Celery application. Queues: turns, actions, ingestion, default (see CELERY_TASK_ROUTES)."""

import os

from celery import Celery
from celery.signals import task_postrun, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("tandem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["config"], related_name="outbox")  # config.outbox_relay


@worker_ready.connect
def _warm_up(**kwargs):
    from knowledge.embeddings import warm_up_in_background

    warm_up_in_background()


@task_postrun.connect
def _outbox_done(task=None, state=None, **kwargs):
    """A task sent through the outbox succeeded: mark its message done (config/outbox.py)."""
    if state != "SUCCESS":
        return  # failed or retrying: the relay sends it again after the lease
    from config.outbox import outbox_mark_done, outbox_message_id

    message_id = outbox_message_id(getattr(task, "request", None))
    if message_id:
        outbox_mark_done(message_id)
