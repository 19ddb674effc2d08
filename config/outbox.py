"""The transactional outbox: a Celery task is sent if and only if its transaction commits.

``outbox_enqueue(task_name, args)`` writes an ``OutboxMessage`` in the caller's transaction (it
refuses to run outside one). After commit the message is claimed (``dispatched_at``) and sent to
Celery at once; if the transaction rolls back, there is nothing to send. The task carries the
message id in a header, and a ``task_postrun`` handler (``config/celery.py``) marks the message
``done_at`` when the task succeeds.

The relay (task ``config.outbox_relay``, beat every 10 s; ``manage.py outbox_relay --every 10``
in the embedded default, which has no beat) sends again every live message whose ``resend_at``
has passed:

* a message never dispatched, ``OUTBOX_RESEND_AFTER_S`` after it was written: the process died
  between commit and send, or the broker refused the message (a failed send un-claims it and
  tries again after the same delay);
* a message dispatched but not done when its lease ends: the worker was killed holding it (with
  Redis, an unacknowledged message otherwise waits for the broker's visibility timeout, an hour
  here), or the task failed. The lease is ``OUTBOX_LEASE_S`` after the first send and doubles
  with every send (capped at 32 times), so a long queue backlog, whose messages are merely
  waiting, costs a few extra sends per message rather than a flood of them.

Sending is therefore *at least once*: a task may run twice, even at the same time. Its consumer
must be idempotent: re-fetch by id and return early when the work is done (as
``integrations.execute_action_run`` does; its backend call is idempotent by key as well). A
message sent ``OUTBOX_MAX_SENDS`` times without finishing is given up (``gave_up_at``) and
logged as an error; failed publishes (broker down) do not count, so an outage loses nothing.

With no broker (the embedded default and tests: Celery eager) "sending" runs the task
in-process, inside the on-commit hook, as ``.delay()`` did; the relay runs it the same way.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from config.models import OutboxMessage

logger = logging.getLogger(__name__)

# The Celery message header that carries the outbox message id to the worker.
HEADER = "tandem_outbox_id"
KEEP_DONE = timedelta(days=7)


class OutboxError(Exception):
    """Misuse of the outbox (no transaction, arguments that are not JSON)."""


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def outbox_enqueue(task_name: str, args: list | tuple = ()) -> OutboxMessage:
    """Record ``task_name(*args)`` in the current transaction; it is sent after commit.

    Refuses outside a transaction (``transaction.atomic``): there an enqueue could not be tied
    to anything, which is what the outbox is for. ``args`` must be JSON (ids, not objects)."""
    if not connection.in_atomic_block:
        raise OutboxError("outbox_enqueue must run inside the transaction whose commit sends the task.")
    args = list(args)
    try:
        json.dumps(args)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"Task arguments must be JSON (pass ids): {exc}") from None
    message = OutboxMessage.objects.create(task_name=task_name, args=args, resend_at=timezone.now() + _resend_after())
    transaction.on_commit(lambda: _dispatch(message.pk, task_name, args))
    return message


def outbox_mark_done(message_id) -> bool:
    """The task of ``message_id`` finished: the relay leaves it alone from now on."""
    now = timezone.now()
    return bool(OutboxMessage.objects.filter(pk=message_id, done_at__isnull=True)
                .update(done_at=now, updated_at=now))


def outbox_relay(*, batch_size: int = 100) -> int:
    """Send again what is due (see the module docstring); returns how many were sent.

    Rows are claimed with ``SKIP LOCKED`` in a short transaction and sent after it, so two
    relays never send the same message in one round and a slow broker holds no locks."""
    now = timezone.now()
    max_sends = int(_setting("OUTBOX_MAX_SENDS", 10))
    claimed: list[tuple] = []
    with transaction.atomic():
        rows = list(OutboxMessage.objects.select_for_update(skip_locked=True)
                    .filter(resend_at__lte=now, done_at__isnull=True, gave_up_at__isnull=True)
                    .order_by("resend_at")[:batch_size])
        for message in rows:
            if message.sends >= max_sends:
                logger.error("outbox: giving up %s after %s sends without finishing", message, message.sends)
                OutboxMessage.objects.filter(pk=message.pk).update(
                    gave_up_at=now, updated_at=now,
                    last_error=(message.last_error + f"\ngave up after {message.sends} sends").strip())
                continue
            _claim(OutboxMessage.objects.filter(pk=message.pk), message.sends, now)
            claimed.append((message.pk, message.task_name, message.args, message.sends))
    _prune(now - KEEP_DONE)
    sent = 0
    for message_id, task_name, args, sends in claimed:
        logger.warning("outbox: sending %s%s again (sent %s time(s) before)", task_name, args, sends)
        try:
            sent += _send(message_id, task_name, args)
        except Exception:  # an eager task that raised; it stays unfinished and is retried after the lease
            logger.exception("outbox: %s%s failed", task_name, args)
    return sent


def _resend_after() -> timedelta:
    return timedelta(seconds=_setting("OUTBOX_RESEND_AFTER_S", 10))


def _claim(queryset, sends: int, now) -> int:
    """Mark as being sent (its ``sends``-th send before this one); the lease starts now."""
    lease = timedelta(seconds=_setting("OUTBOX_LEASE_S", 120)) * (2 ** min(sends, 5))
    return queryset.update(dispatched_at=now, resend_at=now + lease, updated_at=now)


def _prune(before, batch_size: int = 1000) -> int:
    """Finished messages go after a week, a batch per relay round (short statements, on the
    ``created_at`` index; given-up ones stay for someone to look at)."""
    ids = list(OutboxMessage.objects.filter(created_at__lt=before, done_at__isnull=False).order_by("created_at")
               .values_list("pk", flat=True)[:batch_size])
    return OutboxMessage.objects.filter(pk__in=ids).delete()[0] if ids else 0


def _dispatch(message_id, task_name: str, args: list) -> None:
    """The on-commit hook: claim the message unless the relay already did, then send it."""
    pending = OutboxMessage.objects.filter(pk=message_id, dispatched_at__isnull=True, done_at__isnull=True,
                                           sends=0)
    if _claim(pending, 0, timezone.now()):
        _send(message_id, task_name, args)


def _task(task_name: str):
    from config.celery import app

    if task_name not in app.tasks:
        # Outside a worker, autodiscovered task modules are imported on first use.
        app.loader.import_default_modules()
    return app.tasks[task_name]


def _send(message_id, task_name: str, args: list) -> int:
    """Publish one claimed message; on failure un-claim it for the relay. Returns 1 if sent."""
    task = _task(task_name)
    headers = {HEADER: str(message_id)}
    if task.app.conf.task_always_eager:
        # In-process: count the send first, then run (exceptions reach the caller as with .delay()).
        _sent(message_id)
        task.apply(args=args, headers=headers)
        return 1
    try:
        _publish(task, args, headers)
    except Exception as exc:  # noqa: BLE001 - any publish failure leaves the message to the relay
        logger.warning("outbox: could not send %s%s, the relay will retry: %r", task_name, args, exc)
        now = timezone.now()
        OutboxMessage.objects.filter(pk=message_id, done_at__isnull=True).update(
            dispatched_at=None, resend_at=now + _resend_after(), updated_at=now,
            last_error=f"{now.isoformat()} send failed: {exc!r}"[:2000])
        return 0
    _sent(message_id)
    return 1


def _publish(task, args: list, headers: dict) -> None:
    # A short publish retry: a dead broker should cost the committing request a second at most;
    # the relay keeps trying after that.
    task.apply_async(args=args, headers=headers, retry=True,
                     retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5})


def _sent(message_id) -> None:
    OutboxMessage.objects.filter(pk=message_id).update(sends=F("sends") + 1, updated_at=timezone.now())


def outbox_message_id(request) -> str | None:
    """The outbox message a running task came from (a Celery request), if any."""
    if request is None:
        return None
    value = request.get(HEADER) if hasattr(request, "get") else None
    return value or (getattr(request, "headers", None) or {}).get(HEADER)


@shared_task(name="config.outbox_relay", acks_late=True, ignore_result=True, soft_time_limit=50, time_limit=60)
def outbox_relay_task() -> int:
    """Beat, every 10 s: send again what the outbox holds undispatched or unfinished."""
    return outbox_relay()
