"""Celery tasks: thin entry points over worker.service, JSON arguments only.

The task id is bound to every log line by worker.observability (task_prerun / task_postrun).

`callsync.phone_call(event)` is the public contract producers publish to. The other tasks take a
thread key and load everything else from the database, so a retry or a replay always acts on the
stored record, never on a stale copy of the arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import structlog
from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from worker.adapters import repository as repo
from worker.celery_app import PHONE_CALL_TASK, QUEUE, app
from worker.service import Driven, Services, drive_thread, handle_event, quarantine, utcnow
from worker.settings import INFRA_RETRY_BACKOFF_MAX, get_base_config, inline_retry_limit

log = structlog.get_logger("callsync.tasks")

INFRA_ERRORS = (SQLAlchemyError, OSError)
RETRY_POLICY: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": INFRA_ERRORS,   # database or network down: try the whole message again
    "retry_backoff": 2,
    "retry_backoff_max": INFRA_RETRY_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": None,
}
# Chaos testing only: a worker child exits hard on these Genesys ids (a poison message).
CHAOS_CRASH_IDS = "CALLSYNC_CHAOS_CRASH_IDS"


def _services() -> Services:
    from worker.bootstrap import get_services

    return get_services()


def schedule_retry(driven: Driven | None) -> None:
    """A short back-off waits in the broker; a long one in the database, for the sweep."""
    if driven is None or driven.retry_at is None:
        return
    delay = max(0.0, (driven.retry_at - utcnow()).total_seconds())
    if delay <= inline_retry_limit(get_base_config().celery_visibility_timeout):
        drive.apply_async(args=[driven.thread_key], countdown=delay, queue=QUEUE)


def delivery_key(event: Any) -> str:
    """What a message is about, stable across redeliveries: the Genesys id and content."""
    body = json.dumps(event, sort_keys=True, default=str).encode()
    call_id = event.get("interaction_id") if isinstance(event, dict) else None
    return f"event:{str(call_id)[:200]}:{hashlib.sha256(body).hexdigest()[:32]}"


@contextmanager
def poison_guard(svc: Services, key_of: Callable[[], str], on_poison: Callable[[str], None], *,
                 redelivered: bool) -> Iterator[bool]:
    """Yields True when earlier deliveries of this message died mid-task too often.

    Only a redelivered message is counted: the broker flags one that went back to the queue
    unacknowledged (kombu's Redis transport on restore, RabbitMQ on requeue), so a first
    delivery, nearly all of them, costs no write. The flag stands for the delivery that died
    first; each redelivery adds itself to the count before the work starts and takes itself
    back when the task ends in any way Python sees; only a dead process leaves it behind.
    `key_of` names the message; it is only worked out for a redelivery.
    """
    if not redelivered:
        yield False
        return
    key = key_of()
    cap = svc.redelivery_cap
    with svc.transaction() as s:
        died = repo.begin_delivery(s, key, svc.clock()) + 1
    try:
        if died >= cap:
            on_poison(f"quarantined: the worker died {died} times while processing "
                      f"this message (cap {cap})")
            yield True
        else:
            yield False
    finally:
        try:
            with svc.transaction() as s:
                repo.end_delivery(s, key)
        except SQLAlchemyError:
            log.warning("could not close delivery count", key=key)


def _redelivered(task: Task) -> bool:
    return bool((task.request.delivery_info or {}).get("redelivered"))


def _crash_if_told(event: Any) -> None:
    ids = os.environ.get(CHAOS_CRASH_IDS)
    if ids and isinstance(event, dict) and event.get("interaction_id") in ids.split(","):
        os._exit(70)


@app.task(name=PHONE_CALL_TASK, bind=True, **RETRY_POLICY)
def phone_call(self: Task, event: Any) -> None:
    """Apply one Genesys phone-call event (the producers' contract).

    It returns nothing: results are ignored (task_ignore_result), yet Celery formats whatever
    a task returns and sends it to the pool's parent, for every event. The outcome is in the
    log line `event received` and the journal.
    """
    svc = _services()

    def on_poison(reason: str) -> None:
        quarantine(svc, event, thread_key=None, reason=reason)

    with poison_guard(svc, lambda: delivery_key(event), on_poison,
                      redelivered=_redelivered(self)) as poisoned:
        if poisoned:
            return
        _crash_if_told(event)
        _, driven = handle_event(svc, event, task_id=self.request.id)
        schedule_retry(driven)


@app.task(name="callsync.drive_thread", bind=True, **RETRY_POLICY)
def drive(self: Task, thread_key: str) -> dict[str, Any]:
    """Resume a thread from its stored state (after a back-off, or from the sweep)."""
    structlog.contextvars.bind_contextvars(thread=thread_key)
    svc = _services()

    def on_poison(reason: str) -> None:
        quarantine(svc, thread_key, thread_key=thread_key, reason=reason)

    with poison_guard(svc, lambda: f"thread:{thread_key[:250]}", on_poison,
                      redelivered=_redelivered(self)) as poisoned:
        if poisoned:
            return {"outcome": "poison"}
        driven = drive_thread(svc, thread_key)
        schedule_retry(driven)
        return {"steps": driven.steps, "busy": driven.busy}


@app.task(name="callsync.noop", ignore_result=True)
def noop() -> None:
    """Does nothing: the benchmark's measure of Celery's own ceiling on this broker."""


@app.task(name="callsync.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Re-drive every thread whose work is unfinished and unowned (see repository.threads_due)."""
    from worker.service import due_threads

    quiet = timedelta(seconds=get_base_config().sweep_quiet_seconds)
    keys = due_threads(_services(), quiet_for=quiet)
    for key in keys:
        drive.apply_async(args=[key], queue=QUEUE)
    if keys:
        log.info("sweep re-drove threads", count=len(keys))
    return len(keys)
