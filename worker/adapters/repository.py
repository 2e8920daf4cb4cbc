"""All SQL of callsync, behind intention-revealing functions.

Every write that must not happen twice is guarded by the database itself: primary keys with
`INSERT ... ON CONFLICT DO NOTHING` for first sight of a thread, a call or a leg, and
compare-and-set `UPDATE ... WHERE` for the thread lease. Nothing here reads a row in Python to
decide whether to write it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.adapters.models import (
    CallRow,
    DeliveryRow,
    JournalRow,
    LegRow,
    RequestRow,
    ThreadRow,
)
from worker.domain.events import PhoneCallEvent, merge_events
from worker.domain.plan import LEGS, CallState, CallSync, Leg, LegState, ThreadState


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request to a CRM, as the clients report it."""

    crm: str
    method: str
    path: str
    status_code: int | None
    duration_ms: float
    error: str | None = None


@dataclass(frozen=True)
class Claim:
    thread_key: str
    owner: str
    version: int
    took_over: bool   # the previous holder never released: an answer may have been lost


def _insert_ignore(session: Session, model: type, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


# --- events ---------------------------------------------------------------------------------


def journal_rejected(
    session: Session, *, payload: str, error: str, source: str, task_id: str | None,
    interaction_id: str | None, now: datetime,
) -> int:
    row = JournalRow(
        received_at=now, source=source, task_id=task_id, interaction_id=interaction_id,
        payload=payload, outcome="rejected", error=error,
    )
    session.add(row)
    session.flush()
    return row.id


def accept_event(
    session: Session, event: PhoneCallEvent, *, payload: str, source: str,
    task_id: str | None, now: datetime,
) -> str:
    """Journal a valid event and make its call and thread exist; returns the journal outcome.

    `duplicate` (the same event seen before), `stale` (its status is behind the call's) or
    `accepted`. Either way the thread's version moves, so whoever holds its lease looks again.
    """
    call_id, thread_key, status = event.interaction_id, event.thread_key, int(event.status)
    fingerprint = event.fingerprint()
    seen = session.scalar(
        select(JournalRow.id).where(
            JournalRow.interaction_id == call_id, JournalRow.fingerprint == fingerprint
        ).limit(1)
    )
    _insert_ignore(session, ThreadRow, {
        "thread_key": thread_key, "version": 0, "created_at": now, "updated_at": now,
    })
    _insert_ignore(session, CallRow, {
        "interaction_id": call_id, "thread_key": thread_key, "status": status,
        "sync_state": CallSync.PENDING.value, "created_at": now, "updated_at": now,
    })
    previous = session.scalar(select(CallRow.status).where(CallRow.interaction_id == call_id))
    outcome = "duplicate" if seen else ("stale" if previous is not None and previous > status
                                        else "accepted")
    # Locks in one order everywhere (threads, then calls), or PostgreSQL finds deadlocks.
    session.execute(
        update(ThreadRow).where(ThreadRow.thread_key == _call_thread(session, call_id)).values(
            version=ThreadRow.version + 1, updated_at=now,
        )
    )
    session.execute(
        update(CallRow).where(CallRow.interaction_id == call_id).values(
            status=case((CallRow.status < status, status), else_=CallRow.status),
            # A call that moved forward has work again, whoever ends up doing it: the sweep
            # finds it by this state if the worker holding its thread dies first.
            sync_state=case((CallRow.status < status, CallSync.PENDING.value),
                            else_=CallRow.sync_state),
            updated_at=now,
        )
    )
    session.add(JournalRow(
        received_at=now, source=source, task_id=task_id, interaction_id=call_id,
        thread_key=thread_key, status=status, fingerprint=fingerprint, payload=payload,
        outcome=outcome,
    ))
    return outcome


def _call_thread(session: Session, call_id: str) -> Any:
    # The thread a call joined first is its thread for good, whatever later events say.
    return select(CallRow.thread_key).where(CallRow.interaction_id == call_id).scalar_subquery()


def thread_of(session: Session, call_id: str) -> str | None:
    return session.scalar(select(CallRow.thread_key).where(CallRow.interaction_id == call_id))


# --- the thread lease -----------------------------------------------------------------------


def claim_thread(
    session: Session, thread_key: str, owner: str, now: datetime, lease: timedelta
) -> Claim | None:
    """Take the thread's lease if it is free or expired (an atomic compare-and-set)."""
    expires = now + lease
    free = update(ThreadRow).where(
        ThreadRow.thread_key == thread_key, ThreadRow.lease_owner.is_(None)
    ).values(lease_owner=owner, lease_expires_at=expires)
    took_over = False
    if session.execute(free).rowcount != 1:
        expired = update(ThreadRow).where(
            ThreadRow.thread_key == thread_key,
            ThreadRow.lease_owner.is_not(None),
            ThreadRow.lease_expires_at < now,
        ).values(lease_owner=owner, lease_expires_at=expires)
        if session.execute(expired).rowcount != 1:
            return None
        took_over = True
    version = session.scalar(select(ThreadRow.version).where(ThreadRow.thread_key == thread_key))
    return Claim(thread_key, owner, int(version or 0), took_over)


def release_thread(session: Session, claim: Claim, version: int) -> bool:
    """Give the lease back, unless an event arrived since `version` was read (then keep it)."""
    result = session.execute(
        update(ThreadRow).where(
            ThreadRow.thread_key == claim.thread_key,
            ThreadRow.lease_owner == claim.owner,
            ThreadRow.version == version,
        ).values(lease_owner=None, lease_expires_at=None)
    )
    return result.rowcount == 1


def abandon_lease(session: Session, claim: Claim) -> None:
    """Give the lease back after an error, so a retry need not wait for it to expire."""
    session.execute(update(ThreadRow).where(
        ThreadRow.thread_key == claim.thread_key, ThreadRow.lease_owner == claim.owner
    ).values(lease_owner=None, lease_expires_at=None))


def renew_lease(session: Session, claim: Claim, now: datetime, lease: timedelta) -> bool:
    result = session.execute(
        update(ThreadRow).where(
            ThreadRow.thread_key == claim.thread_key, ThreadRow.lease_owner == claim.owner
        ).values(lease_expires_at=now + lease)
    )
    return result.rowcount == 1


def thread_version(session: Session, thread_key: str) -> int:
    return int(session.scalar(
        select(ThreadRow.version).where(ThreadRow.thread_key == thread_key)
    ) or 0)


# --- loading and saving the aggregate -------------------------------------------------------


def load_thread(session: Session, thread_key: str) -> ThreadState:
    thread = session.get(ThreadRow, thread_key)
    if thread is None:
        raise LookupError(f"no thread {thread_key!r}")
    call_ids = list(session.scalars(
        select(CallRow.interaction_id).where(CallRow.thread_key == thread_key)
    ))
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call_id, payload in session.execute(
        select(JournalRow.interaction_id, JournalRow.payload)
        .where(JournalRow.interaction_id.in_(call_ids), JournalRow.outcome != "rejected")
        .order_by(JournalRow.id)
    ):
        events[call_id].append(json.loads(payload))
    legs: dict[str, dict[str, Leg]] = defaultdict(dict)
    for row in session.scalars(select(LegRow).where(LegRow.interaction_id.in_(call_ids))):
        legs[row.interaction_id][row.leg] = Leg(
            state=LegState(row.state), remote_id=row.remote_id, attempts=row.attempts,
            next_attempt_at=row.next_attempt_at, error=row.error,
        )
    state = ThreadState(
        key=thread_key,
        top_level_id=thread.top_level_interaction_id,
        top_level_call_id=thread.top_level_call_id,
    )
    for call_id in call_ids:
        if not events[call_id]:
            continue
        call = CallState(call_id, merge_events(events[call_id]))
        call.legs.update(legs[call_id])
        state.calls[call_id] = call
    return state


def save_step(
    session: Session, thread: ThreadState, call: CallState, legs: Iterable[str],
    requests: Sequence[RequestRecord], *, now: datetime, error_kind: str | None = None,
    request_id: str | None = None,
) -> None:
    """Commit what a step changed: the legs it moved, the thread's top-level, its requests."""
    for name in legs:
        leg = call.legs[name]
        values = {
            "state": leg.state.value, "remote_id": leg.remote_id, "attempts": leg.attempts,
            "error": leg.error, "error_kind": error_kind, "request_id": request_id,
            "next_attempt_at": leg.next_attempt_at, "updated_at": now,
        }
        _insert_ignore(session, LegRow, {"interaction_id": call.interaction_id, "leg": name,
                                         **values})
        session.execute(update(LegRow).where(
            LegRow.interaction_id == call.interaction_id, LegRow.leg == name
        ).values(**values))
    session.execute(update(ThreadRow).where(ThreadRow.thread_key == thread.key).values(
        top_level_interaction_id=thread.top_level_id,
        top_level_call_id=thread.top_level_call_id,
        updated_at=now,
    ))
    session.execute(update(CallRow).where(CallRow.interaction_id == call.interaction_id).values(
        sync_state=call.sync_state().value, updated_at=now,
    ))
    session.add_all(
        RequestRow(
            at=now, interaction_id=call.interaction_id, leg=",".join(legs), crm=r.crm,
            method=r.method, path=r.path[:500], status_code=r.status_code,
            duration_ms=r.duration_ms, error=r.error,
        )
        for r in requests
    )


def save_sync_states(session: Session, thread: ThreadState, now: datetime) -> None:
    for call in thread.calls.values():
        session.execute(update(CallRow).where(
            CallRow.interaction_id == call.interaction_id,
            CallRow.sync_state != call.sync_state().value,
        ).values(sync_state=call.sync_state().value, updated_at=now))


# --- poison messages ------------------------------------------------------------------------


def begin_delivery(session: Session, key: str, now: datetime) -> int:
    """Count one more started delivery of `key`; returns how many were unfinished before it."""
    _insert_ignore(session, DeliveryRow, {"key": key, "in_flight": 0, "updated_at": now})
    in_flight = session.execute(
        update(DeliveryRow).where(DeliveryRow.key == key)
        .values(in_flight=DeliveryRow.in_flight + 1, updated_at=now)
        .returning(DeliveryRow.in_flight)
    ).scalar_one()
    return int(in_flight) - 1


def end_delivery(session: Session, key: str) -> None:
    session.execute(
        update(DeliveryRow).where(DeliveryRow.key == key, DeliveryRow.in_flight > 0)
        .values(in_flight=DeliveryRow.in_flight - 1)
    )


def journal_poison(
    session: Session, *, payload: str, interaction_id: str | None, error: str, now: datetime,
) -> None:
    session.add(JournalRow(
        received_at=now, source="quarantine", interaction_id=interaction_id, payload=payload,
        outcome="poison", error=error,
    ))


# --- queries for operators and the sweep ----------------------------------------------------


def threads_due(session: Session, now: datetime, quiet_for: timedelta, limit: int) -> list[str]:
    """Threads with work that nobody is doing: unfinished calls, no live lease, quiet a while.

    This is how work the broker lost (a Redis restart, a dropped message, a dead worker) still
    completes: the database, not the queue, is the record of what remains to be done.
    """
    unfinished = (CallSync.PENDING.value, CallSync.RETRYING.value)
    due_leg = select(LegRow.interaction_id).where(
        LegRow.state == LegState.RETRY.value,
        or_(LegRow.next_attempt_at.is_(None), LegRow.next_attempt_at <= now),
    )
    query = (
        select(CallRow.thread_key)
        .join(ThreadRow, ThreadRow.thread_key == CallRow.thread_key)
        .where(
            or_(ThreadRow.lease_owner.is_(None), ThreadRow.lease_expires_at < now),
            or_(
                and_(CallRow.sync_state == CallSync.PENDING.value,
                     CallRow.updated_at < now - quiet_for),
                and_(CallRow.sync_state.in_(unfinished), CallRow.interaction_id.in_(due_leg)),
            ),
        )
        .group_by(CallRow.thread_key)
        .order_by(func.min(CallRow.updated_at))
        .limit(limit)
    )
    return list(session.scalars(query))


__all__ = [
    "LEGS", "Claim", "RequestRecord", "accept_event", "claim_thread", "journal_rejected",
    "load_thread", "release_thread", "renew_lease", "save_step", "save_sync_states",
    "thread_of", "thread_version", "threads_due",
]
