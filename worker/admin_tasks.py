"""Operator tasks: `callsync.replay` (same service function as `callsync replay`) and the
liveness heartbeat that worker.observability sends each worker through its own queue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog
from celery import Task

from worker.celery_app import app
from worker.replay import Selection, parse_when, replay
from worker.service import utcnow

log = structlog.get_logger("callsync.admin")


@app.task(name="callsync.replay", bind=True, acks_late=True)
def replay_task(
    self: Task, ids: list[str] | None = None, states: list[str] | None = None,
    legs: list[str] | None = None, since: str | None = None, until: str | None = None,
    limit: int | None = None, dry_run: bool = False, resync: bool = False,
) -> dict[str, Any]:
    """Replay from a message (Flower, a script): the report is logged, and returned as JSON.

    Idempotent by construction (resets are compare-and-set, creates look up first), so a
    redelivery after a worker died mid-replay is harmless.
    """
    from worker.bootstrap import get_services

    structlog.contextvars.bind_contextvars(task_id=self.request.id)
    try:
        now = utcnow()
        selection = Selection(
            ids=tuple(ids or ()), states=tuple(states or ()), legs=tuple(legs or ()),
            since=parse_when(since, now), until=parse_when(until, now), limit=limit,
        )
        report = replay(get_services(), selection, dry_run=dry_run, resync=resync)
        for result in report.results:
            if result.failed:
                log.warning("replay left a call unfinished", interaction_id=result.interaction_id,
                            thread=result.thread_key, outcome=result.outcome, error=result.error)
        return report.to_dict()
    except ValueError as exc:   # a bad selection: say so, do not retry
        log.error("replay refused", error=str(exc))
        return {"error": str(exc)}
    finally:
        structlog.contextvars.clear_contextvars()


@app.task(name="callsync.heartbeat", ignore_result=True, acks_late=False)
def heartbeat(path: str) -> None:
    """Touch the liveness file: proof that this worker takes messages off the broker and runs
    them in its pool (see worker.observability)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()
    os.utime(target)
