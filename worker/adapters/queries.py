"""Read-mostly SQL for operators: selecting calls to replay, failures, a call's timeline, metrics.

Kept apart from worker.adapters.repository (the hot path of the worker). The one write here,
`reset_legs`, is a compare-and-set on the leg's state, so it can never undo a leg that a worker
completed meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from worker.adapters.models import CallRow, JournalRow, LegRow, RequestRow, ThreadRow
from worker.domain.plan import LEGS, CallSync, LegState

# What an operator may select calls by; `unfinished` is work the worker still owes.
STATE_FILTERS: dict[str, tuple[str, ...]] = {
    "failed": (CallSync.FAILED.value,),
    "parked": (CallSync.PARKED.value,),
    "unfinished": (CallSync.PENDING.value, CallSync.RETRYING.value),
    "open": (CallSync.OPEN.value,),
    "synced": (CallSync.SYNCED.value,),
}
# Legs a replay moves back to pending: the stuck ones. A pending leg needs no reset.
RESETTABLE = (LegState.FAILED.value, LegState.PARKED.value, LegState.RETRY.value)
BROKEN = (LegState.FAILED.value, LegState.PARKED.value)


@dataclass(frozen=True)
class Target:
    interaction_id: str
    thread_key: str
    sync_state: str


def select_calls(
    session: Session, *, ids: Sequence[str] = (), states: Sequence[str] = (),
    legs: Sequence[str] = (), since: datetime | None = None, until: datetime | None = None,
    limit: int | None = None,
) -> list[Target]:
    """Calls matching every filter given (ids, call states, a stuck leg, last activity window)."""
    query = select(CallRow.interaction_id, CallRow.thread_key, CallRow.sync_state)
    if ids:
        query = query.where(CallRow.interaction_id.in_(list(ids)))
    if states:
        wanted = [value for name in states for value in STATE_FILTERS[name]]
        query = query.where(CallRow.sync_state.in_(wanted))
    if legs:
        query = query.where(exists().where(
            LegRow.interaction_id == CallRow.interaction_id, LegRow.leg.in_(list(legs)),
            LegRow.state != LegState.DONE.value,
        ))
    if since is not None:
        query = query.where(CallRow.updated_at >= since)
    if until is not None:
        query = query.where(CallRow.updated_at < until)
    query = query.order_by(CallRow.thread_key, CallRow.created_at, CallRow.interaction_id)
    if limit is not None:
        query = query.limit(limit)
    return [Target(*row) for row in session.execute(query)]


def reset_legs(
    session: Session, interaction_id: str, legs: Iterable[str], now: datetime
) -> list[str]:
    """Stuck legs back to pending, attempts kept (so the service looks before it re-creates).

    Returns the legs moved. The thread's version is bumped so that a worker holding its lease
    reads the thread again before it lets go, instead of missing the reset.
    """
    names = list(legs)
    moved = list(session.scalars(
        update(LegRow).where(
            LegRow.interaction_id == interaction_id, LegRow.leg.in_(names),
            LegRow.state.in_(RESETTABLE),
        ).values(state=LegState.PENDING.value, error=None, error_kind=None,
                 next_attempt_at=None, updated_at=now)
        .returning(LegRow.leg)
    ))
    if moved:
        session.execute(update(CallRow).where(CallRow.interaction_id == interaction_id)
                        .values(sync_state=CallSync.PENDING.value, updated_at=now))
        session.execute(update(ThreadRow).where(
            ThreadRow.thread_key == select(CallRow.thread_key)
            .where(CallRow.interaction_id == interaction_id).scalar_subquery()
        ).values(version=ThreadRow.version + 1, updated_at=now))
    return moved


def record_requests(
    session: Session, interaction_id: str, leg: str, requests: Sequence[Any], now: datetime
) -> None:
    """Log requests made outside a step (a resync) in the call's timeline."""
    session.add_all(
        RequestRow(at=now, interaction_id=interaction_id, leg=leg, crm=r.crm, method=r.method,
                   path=r.path[:500], status_code=r.status_code, duration_ms=r.duration_ms,
                   error=r.error)
        for r in requests
    )


def call_sync_states(session: Session, ids: Sequence[str]) -> dict[str, str]:
    return dict(session.execute(
        select(CallRow.interaction_id, CallRow.sync_state)
        .where(CallRow.interaction_id.in_(list(ids)))
    ).all())


# --- failures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    interaction_id: str | None
    leg: str                      # a leg name, or `input` for an event that was rejected
    state: str                    # failed | parked | rejected | poison
    error: str | None
    attempts: int
    last_attempt_at: datetime
    thread_key: str | None = None


def failures(session: Session, *, leg: str | None = None,
             since: datetime | None = None) -> list[Failure]:
    """One row per failed or parked call (its first stuck leg in pipeline order), then bad input.

    Bad input (journal outcome `rejected`, or `poison` for a message that killed workers) has
    leg `input`; a rejected event without a usable Genesys id is a row of its own.
    """
    rows: list[Failure] = []
    if leg != "input":
        query = (
            select(LegRow, CallRow.thread_key)
            .join(CallRow, CallRow.interaction_id == LegRow.interaction_id)
            .where(LegRow.state.in_(BROKEN))
        )
        if leg is not None:
            query = query.where(LegRow.leg == leg)
        if since is not None:
            query = query.where(LegRow.updated_at >= since)
        first: dict[str, tuple[LegRow, str]] = {}
        for row, thread_key in session.execute(query).all():
            held = first.get(row.interaction_id)
            if held is None or LEGS.index(row.leg) < LEGS.index(held[0].leg):
                first[row.interaction_id] = (row, thread_key)
        rows += [
            Failure(row.interaction_id, row.leg, row.state, row.error, row.attempts,
                    row.updated_at, thread_key)
            for row, thread_key in first.values()
        ]
    if leg in (None, "input"):
        rows += _bad_input(session, since, shown={r.interaction_id for r in rows})
    return sorted(rows, key=lambda f: f.last_attempt_at, reverse=True)


def _bad_input(session: Session, since: datetime | None, shown: set[str | None]) -> list[Failure]:
    query = select(JournalRow.interaction_id, JournalRow.outcome, JournalRow.error,
                   JournalRow.received_at).where(JournalRow.outcome.in_(("rejected", "poison")))
    if since is not None:
        query = query.where(JournalRow.received_at >= since)
    grouped: dict[str, Failure] = {}
    loose: list[Failure] = []
    for call_id, outcome, error, at in session.execute(query.order_by(JournalRow.id)):
        if call_id is None:
            loose.append(Failure(None, "input", outcome, error, 1, at))
            continue
        if call_id in shown:      # its failed leg already tells the story
            continue
        before = grouped.get(call_id)
        grouped[call_id] = Failure(call_id, "input", outcome, error,
                                   (before.attempts if before else 0) + 1, at)
    return [*grouped.values(), *loose]


# --- one call's whole story -----------------------------------------------------------------


@dataclass
class Timeline:
    interaction_id: str
    call: CallRow | None
    thread: ThreadRow | None
    legs: list[LegRow]
    events: list[JournalRow]
    requests: list[RequestRow]
    thread_calls: list[tuple[str, str]]   # (interaction_id, sync_state) of the whole thread


def timeline(session: Session, interaction_id: str) -> Timeline:
    call = session.get(CallRow, interaction_id)
    thread = session.get(ThreadRow, call.thread_key) if call is not None else None
    legs = list(session.scalars(select(LegRow).where(LegRow.interaction_id == interaction_id)))
    legs.sort(key=lambda row: LEGS.index(row.leg) if row.leg in LEGS else len(LEGS))
    events = list(session.scalars(select(JournalRow).where(
        JournalRow.interaction_id == interaction_id).order_by(JournalRow.id)))
    requests = list(session.scalars(select(RequestRow).where(
        RequestRow.interaction_id == interaction_id).order_by(RequestRow.id)))
    thread_calls: list[tuple[str, str]] = []
    if call is not None:
        thread_calls = list(session.execute(
            select(CallRow.interaction_id, CallRow.sync_state)
            .where(CallRow.thread_key == call.thread_key).order_by(CallRow.created_at)
        ).all())
    return Timeline(interaction_id, call, thread, legs, events, requests, thread_calls)


# --- metrics --------------------------------------------------------------------------------


def oldest_unfinished(session: Session) -> datetime | None:
    """When the longest-waiting unfinished call (pending or retrying) was first received."""
    return session.scalar(select(func.min(CallRow.created_at)).where(
        CallRow.sync_state.in_(STATE_FILTERS["unfinished"])))


def calls_by_state(session: Session) -> dict[str, int]:
    return {state: int(count) for state, count in session.execute(
        select(CallRow.sync_state, func.count()).group_by(CallRow.sync_state)).all()}




# --- replay bookkeeping ---------------------------------------------------------------------


def requests_since(session: Session, ids: Sequence[str], since: datetime) -> list[RequestRow]:
    return list(session.scalars(select(RequestRow).where(
        RequestRow.interaction_id.in_(list(ids)), RequestRow.at >= since).order_by(RequestRow.id)))


def first_errors(session: Session, ids: Sequence[str]) -> dict[str, str]:
    """Each call's error from its first stuck leg, in pipeline order."""
    found: dict[str, tuple[int, str]] = {}
    for call_id, leg, error in session.execute(
        select(LegRow.interaction_id, LegRow.leg, LegRow.error).where(
            LegRow.interaction_id.in_(list(ids)), LegRow.error.is_not(None))
    ).all():
        rank = LEGS.index(leg) if leg in LEGS else len(LEGS)
        if call_id not in found or rank < found[call_id][0]:
            found[call_id] = (rank, error)
    return {call_id: error for call_id, (_, error) in found.items()}


def force_release(session: Session, thread_key: str, owner: str) -> None:
    """Give a lease back whatever the thread's version (the holder drives it again itself)."""
    session.execute(update(ThreadRow).where(
        ThreadRow.thread_key == thread_key, ThreadRow.lease_owner == owner
    ).values(lease_owner=None, lease_expires_at=None))


__all__ = [
    "STATE_FILTERS", "Failure", "Target", "Timeline", "call_sync_states",
    "calls_by_state", "failures", "first_errors", "force_release", "oldest_unfinished",
    "record_requests", "requests_since", "reset_legs", "select_calls", "timeline",
]
