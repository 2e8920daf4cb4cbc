"""Celery tasks: thin entry points over worker.service, JSON arguments only.

`callsync.phone_call(event)` is the public contract producers publish to. The other tasks take a
thread key and load everything else from the database, so a retry or a replay always acts on the
stored record, never on a stale copy of the arguments.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from worker.celery_app import QUEUE, app
from worker.service import Driven, drive_thread, handle_event, utcnow

log = structlog.get_logger("callsync.tasks")

# A back-off that ends within this many seconds is waited for in the broker; a longer one
# waits in the database and the periodic sweep picks it up (no huge countdowns on Redis).
INLINE_RETRY_MAX_SECONDS = 300
INFRA_ERRORS = (SQLAlchemyError, OSError)


def _services():  # type: ignore[no-untyped-def]
    from worker.bootstrap import get_services

    return get_services()


def schedule_retry(driven: Driven | None) -> None:
    if driven is None or driven.retry_at is None:
        return
    delay = max(0.0, (driven.retry_at - utcnow()).total_seconds())
    if delay <= INLINE_RETRY_MAX_SECONDS:
        drive.apply_async(args=[driven.thread_key], countdown=delay, queue=QUEUE)


@app.task(
    name="callsync.phone_call", bind=True, acks_late=True, reject_on_worker_lost=True,
    autoretry_for=INFRA_ERRORS, retry_backoff=2, retry_backoff_max=120, retry_jitter=True,
    max_retries=None,
)
def phone_call(self: Task, event: Any) -> dict[str, Any]:
    """Apply one Genesys phone-call event (the producers' contract)."""
    structlog.contextvars.bind_contextvars(task_id=self.request.id)
    try:
        received, driven = handle_event(_services(), event, task_id=self.request.id)
        schedule_retry(driven)
        return {"outcome": received.outcome, "interaction_id": received.interaction_id}
    finally:
        structlog.contextvars.clear_contextvars()


@app.task(
    name="callsync.drive_thread", bind=True, acks_late=True, reject_on_worker_lost=True,
    autoretry_for=INFRA_ERRORS, retry_backoff=2, retry_backoff_max=120, retry_jitter=True,
    max_retries=None,
)
def drive(self: Task, thread_key: str) -> dict[str, Any]:
    """Resume a thread from its stored state (after a back-off, or from the sweep)."""
    structlog.contextvars.bind_contextvars(task_id=self.request.id, thread=thread_key)
    try:
        driven = drive_thread(_services(), thread_key)
        schedule_retry(driven)
        return {"steps": driven.steps, "busy": driven.busy}
    finally:
        structlog.contextvars.clear_contextvars()


@app.task(name="callsync.noop", ignore_result=True)
def noop() -> None:
    """Does nothing: the benchmark's measure of Celery's own ceiling on this broker."""


@app.task(name="callsync.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Re-drive every thread whose work is unfinished and unowned (see repository.threads_due)."""
    from worker.service import due_threads

    keys = due_threads(_services())
    for key in keys:
        drive.apply_async(args=[key], queue=QUEUE)
    if keys:
        log.info("sweep re-drove threads", count=len(keys))
    return len(keys)
