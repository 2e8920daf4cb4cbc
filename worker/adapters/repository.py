"""All SQL of callsync, behind intention-revealing functions.

Every write that must not happen twice is guarded by the database itself: primary keys with
`INSERT ... ON CONFLICT DO UPDATE` for a thread, a call or a leg (the first sight creates the
row, every later one updates it in the same statement), and compare-and-set `UPDATE ... WHERE`
for the thread lease. Nothing here reads a row in Python to
decide whether to write it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from worker.adapters.models import (
    CallRow,
    LegRow,
    ThreadRow,
    calls_t,
    deliveries_t,
    journal_t,
    legs_t,
    requests_t,
    threads_t,
)
from worker.adapters.pg_function import Part, PgFunction, Then
from worker.adapters.pg_step import LeaseStatements, release_function, save_results_function
from worker.adapters.prepared import Prepared, PreparedRows, RowBinds
from worker.domain.events import PhoneCallEvent, Status, merge_events
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
    # This claim's own event created the thread and its call is in it: the event is all the
    # thread holds, so there is nothing to read back.
    fresh: bool = False
    # The thread as read with the claim, when the claim's own statement could read it too
    # (PostgreSQL's journal function); None: read it next, unless it is fresh.
    read: ThreadState | None = field(default=None, compare=False, repr=False)


# The hot path runs the same dozen statements for every event. They are built and compiled once
# per dialect and run on the connection's DBAPI cursor (worker.adapters.prepared): building and
# caching an ORM statement per call cost about 70% of the CPU of an event, and SQLAlchemy's
# execution of a compiled one 10-40 µs more per statement (see docs/performance-history.md).
THREAD_PART, LEGS_PART = 0, 1   # the two parts of a thread's read, in this order


class _Statements:
    """The hot path's statements for one dialect (INSERT ... ON CONFLICT is dialect-specific)."""

    def __init__(self, dialect: Dialect) -> None:
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        p = bindparam
        self.call_of = select(calls_t.c.thread_key, calls_t.c.status).where(
            calls_t.c.interaction_id == p("call"))
        # Every event moves its thread's version (whoever holds the lease looks again) and takes
        # the lease if it is free, in one statement; the SET clause sees the row as it was. The
        # thread a call joined first is its thread for good, whatever later events say.
        joined = select(calls_t.c.thread_key).where(
            calls_t.c.interaction_id == p("call")).scalar_subquery()
        new_thread = insert(threads_t).values(
            thread_key=func.coalesce(joined, p("thread", type_=String)), version=1,
            created_at=p("now"), updated_at=p("now"), lease_owner=p("owner"),
            lease_expires_at=p("expires"))
        lease_free = threads_t.c.lease_owner.is_(None)
        self.bump_and_claim = new_thread.on_conflict_do_update(
            index_elements=[threads_t.c.thread_key],
            set_={
                "version": threads_t.c.version + 1,
                "updated_at": new_thread.excluded.updated_at,
                "lease_owner": case((lease_free, new_thread.excluded.lease_owner),
                                    else_=threads_t.c.lease_owner),
                "lease_expires_at": case((lease_free, new_thread.excluded.lease_expires_at),
                                         else_=threads_t.c.lease_expires_at),
            },
        ).returning(threads_t.c.thread_key, threads_t.c.version, threads_t.c.lease_owner,
                    threads_t.c.lease_expires_at)
        new_call = insert(calls_t).values(
            interaction_id=p("call"), thread_key=p("thread"), status=p("new_status"),
            sync_state=CallSync.PENDING.value, created_at=p("now"), updated_at=p("now"))
        moved = calls_t.c.status < new_call.excluded.status
        # A call that reaches STOPPED has work again (its end, phoneCall and Caliq legs; an
        # earlier status needs only the interaction it already has), whoever ends up doing it:
        # the sweep finds it by this state if the worker holding its thread dies first.
        gains_work = and_(moved, new_call.excluded.status == int(Status.STOPPED))
        self.upsert_call = new_call.on_conflict_do_update(
            index_elements=[calls_t.c.interaction_id],
            set_={
                "status": case((moved, new_call.excluded.status), else_=calls_t.c.status),
                "sync_state": case((gains_work, CallSync.PENDING.value),
                                   else_=calls_t.c.sync_state),
                "updated_at": new_call.excluded.updated_at,
            },
        ).returning(calls_t.c.thread_key)
        self.journal = insert(journal_t)
        # An event's outcome is decided as it is journaled, after its thread's row is locked
        # and its call upserted: a duplicate racing it has committed by then and is seen.
        seen = select(journal_t.c.id).where(
            journal_t.c.interaction_id == p("call"), journal_t.c.fingerprint == p("fingerprint")
        ).exists()
        stored_status = select(calls_t.c.status).where(
            calls_t.c.interaction_id == p("call")).scalar_subquery()   # the furthest so far
        self.journal_event = insert(journal_t).values(
            received_at=p("now"), source=p("from"), task_id=p("task"), interaction_id=p("call"),
            thread_key=p("event_thread"), status=p("new_status"), fingerprint=p("fingerprint"),
            payload=p("body"), error=None,
            outcome=case((seen, "duplicate"), (stored_status > p("new_status"), "stale"),
                         else_="accepted"),
        ).returning(journal_t.c.outcome)
        lease_expired = and_(threads_t.c.lease_owner.is_not(None),
                             threads_t.c.lease_expires_at < p("now"))
        def claim_when(condition: Any) -> Any:
            return update(threads_t).where(threads_t.c.thread_key == p("thread"), condition).values(
                lease_owner=p("owner"), lease_expires_at=p("expires")
            ).returning(threads_t.c.version)

        self.claim_free = claim_when(lease_free)
        self.claim_expired = claim_when(lease_expired)
        held = and_(threads_t.c.thread_key == p("thread"), threads_t.c.lease_owner == p("owner"))
        unmoved = threads_t.c.version == p("seen_version")
        self.release = update(threads_t).where(held, unmoved).values(
            lease_owner=None, lease_expires_at=None)
        self.abandon = update(threads_t).where(held).values(lease_owner=None,
                                                            lease_expires_at=None)
        self.renew = update(threads_t).where(held).values(lease_expires_at=p("expires"))
        self.version = select(threads_t.c.version).where(threads_t.c.thread_key == p("thread"))
        in_thread = calls_t.c.thread_key == p("thread")
        # The whole thread in one read: first one row per journaled event (each carrying the
        # thread's top-level; a thread with no event yet gives one row of NULLs, an unknown
        # one none), then one row per leg of its calls. Columns a part lacks are NULL, typed
        # for the rows' processing (SQLite keeps datetimes as text).
        events = (
            select(journal_t.c.id, journal_t.c.interaction_id, journal_t.c.payload,
                   calls_t.c.sync_state, calls_t.c.thread_key)
            .join(calls_t, calls_t.c.interaction_id == journal_t.c.interaction_id)
            .where(in_thread, journal_t.c.outcome != "rejected")
            .subquery()
        )

        def absent(column: Any) -> Any:
            return type_coerce(null(), column.type).label(column.name)

        leg_columns = (legs_t.c.leg, legs_t.c.state, legs_t.c.remote_id, legs_t.c.attempts,
                       legs_t.c.next_attempt_at, legs_t.c.error)
        event_rows = (
            select(literal(THREAD_PART).label("part"), events.c.id.label("seq"),
                   threads_t.c.top_level_interaction_id, threads_t.c.top_level_call_id,
                   events.c.interaction_id, events.c.payload, events.c.sync_state,
                   *(absent(c) for c in leg_columns))
            .select_from(threads_t.outerjoin(events,
                                             events.c.thread_key == threads_t.c.thread_key))
            .where(threads_t.c.thread_key == p("thread"))
        )
        leg_rows = (
            select(literal(LEGS_PART), null(), null(), null(), legs_t.c.interaction_id,
                   null(), null(), *leg_columns)
            .join(calls_t, calls_t.c.interaction_id == legs_t.c.interaction_id)
            .where(in_thread)
        )
        whole = union_all(event_rows, leg_rows).subquery()
        self.thread_rows = select(whole).order_by(whole.c.part, whole.c.seq)
        # The top-level is saved whoever holds the lease now (the request was made); the lease
        # is extended only for its holder, and the owner returned says whether that is us.
        self.save_top_level = update(threads_t).where(threads_t.c.thread_key == p("thread")).values(
            top_level_interaction_id=p("top_level_id"), top_level_call_id=p("top_level_call"),
            updated_at=p("now"),
            lease_expires_at=case((threads_t.c.lease_owner == p("owner"), p("expires")),
                                  else_=threads_t.c.lease_expires_at),
        ).returning(threads_t.c.lease_owner)
        # A call's sync state as its thread was read, unless an event has moved the call on
        # since: a STOPPED journaled meanwhile made it `pending` (work again), which a state
        # worked out from the read before must not overwrite.
        self.save_sync = update(calls_t).where(
            calls_t.c.interaction_id == p("call"), calls_t.c.sync_state != p("sync"),
            calls_t.c.status <= p("read_status"),
        ).values(sync_state=p("sync"), updated_at=p("now"))
        new_delivery = insert(deliveries_t).values(
            key=p("delivery"), in_flight=1, updated_at=p("now"))
        self.begin_delivery = new_delivery.on_conflict_do_update(
            index_elements=[deliveries_t.c.key],
            set_={"in_flight": deliveries_t.c.in_flight + 1,
                  "updated_at": new_delivery.excluded.updated_at},
        ).returning(deliveries_t.c.in_flight)
        self.end_delivery = update(deliveries_t).where(
            deliveries_t.c.key == p("delivery"), deliveries_t.c.in_flight > 0
        ).values(in_flight=deliveries_t.c.in_flight - 1)
        # On PostgreSQL an event's three journal statements are one round trip: a function made
        # of them (worker.adapters.pg_function), created on every connection (install_functions).
        # It ends with the thread's read when the claim is this event's and the thread holds
        # more than the event (accept_event's `fresh`): the drive needs no other round trip.
        # `owner` NULL: the event takes no lease, and the thread is read if nobody holds it.
        claimed_and_not_fresh = and_(
            p("holder", type_=String).is_not_distinct_from(p("owner")),
            not_(and_(p("bumped_version", type_=Integer) == 1,
                      p("call_thread", type_=String) == p("thread"))))
        self.accept = PgFunction("callsync_accept", [
            Part(self.bump_and_claim, into=("thread_key", "version", "lease_owner",
                                            "lease_expires_at")),
            Part(self.upsert_call, into=("call_thread",), feed={"thread": "thread_key"}),
            Part(self.journal_event, into=("outcome",)),
        ], dialect, then=Then(self.thread_rows, when=claimed_and_not_fresh, feed={
            "thread": "thread_key", "holder": "lease_owner", "bumped_version": "version",
            "call_thread": "call_thread",
        })) if dialect.name == "postgresql" else None
        # And a batch of steps' results with the release after it (save_step_and_release), and
        # a release alone (release_or_read_again): each, when the release is refused because
        # events arrived, renews the lease and reads the thread again in the same round trip.
        lease = LeaseStatements(self.release, self.renew, self.version, self.thread_rows)
        postgres = dialect.name == "postgresql"
        self.save_results = save_results_function(
            dialect, lease, LEG_VALUES, REQUEST_VALUES) if postgres else None
        self.release_or_read = release_function(dialect, lease) if postgres else None
        self.functions = tuple(f for f in (self.accept, self.save_results, self.release_or_read)
                               if f is not None)
        for name in PREPARED:
            setattr(self, name, Prepared(getattr(self, name), dialect))

        def upsert_legs(rows: list[RowBinds]) -> Any:
            new_legs = insert(legs_t).values(rows)
            return new_legs.on_conflict_do_update(
                index_elements=[legs_t.c.interaction_id, legs_t.c.leg],
                set_={name: new_legs.excluded[name] for name in LEG_VALUES},
            )

        self.upsert_legs = PreparedRows(upsert_legs, ("interaction_id", "leg", *LEG_VALUES),
                                        dialect)
        self.requests = PreparedRows(lambda rows: insert(requests_t).values(rows),
                                     REQUEST_VALUES, dialect)


LEG_VALUES = ("state", "remote_id", "attempts", "error", "error_kind", "request_id",
              "next_attempt_at", "updated_at")
REQUEST_VALUES = ("at", "interaction_id", "leg", "crm", "method", "path", "status_code",
                  "duration_ms", "error")
# Every single-row statement above but `journal` (an insert whose columns vary: it stays with
# SQLAlchemy); the legs and requests, several rows at once, are PreparedRows.
PREPARED = ("call_of", "bump_and_claim", "upsert_call", "journal_event", "claim_free",
            "claim_expired", "release", "abandon", "renew", "version", "thread_rows",
            "save_top_level", "save_sync", "begin_delivery", "end_delivery")


_BY_DIALECT: dict[str, _Statements] = {}


def _statements_for(dialect: Dialect) -> _Statements:
    """One set per dialect name, compiled for the first dialect of that name seen."""
    found = _BY_DIALECT.get(dialect.name)
    if found is None:
        found = _BY_DIALECT.setdefault(dialect.name, _Statements(dialect))
    return found


# The hot path runs on a Core connection (Services.connection_transaction); operators' commands
# and the sweep pass an ORM session. Both work everywhere a function takes `Db`.
Db = Session | Connection


def _run(db: Db) -> tuple[Connection, _Statements]:
    conn = db if isinstance(db, Connection) else db.connection()
    return conn, _statements_for(conn.dialect)


def install_functions(dbapi_connection: Any, dialect: Dialect) -> None:
    """Create the hot path's PostgreSQL functions on a new connection (see make_engine)."""
    for function in _statements_for(dialect).functions:
        function.install(dbapi_connection)


# --- events ---------------------------------------------------------------------------------


def journal_rejected(
    session: Db, *, payload: str, error: str, source: str, task_id: str | None,
    interaction_id: str | None, now: datetime,
) -> None:
    conn, sql = _run(session)
    conn.execute(sql.journal, {
        "received_at": now, "source": source, "task_id": task_id,
        "interaction_id": interaction_id, "payload": payload, "outcome": "rejected",
        "error": error,
    })


def accept_event(
    session: Db, event: PhoneCallEvent, *, payload: str, source: str,
    task_id: str | None, now: datetime, owner: str, lease: timedelta, take_lease: bool = True,
) -> tuple[str, str, Claim | None, ThreadState | None]:
    """Journal a valid event, make its call and thread exist, and claim the thread for `owner`
    (with `take_lease` False, only a lease that expired: its holder died).

    Returns the journal outcome, the call's thread, the claim (None: another worker holds a
    live lease and will see this event, or none was taken) and, when no lease was taken and
    none is held, the thread as it is with this event in it. The outcome is `duplicate` (the
    same event seen before), `stale` (its status is behind the call's) or `accepted`. Either
    way the thread's version moves, so whoever holds its lease, or takes it next, sees it.
    """
    conn, sql = _run(session)
    journaled = {
        "call": event.interaction_id, "thread": event.thread_key, "now": now,
        # No owner: a free lease stays free (and gets no expiry), a held one stays held.
        "owner": owner if take_lease else None, "expires": now + lease if take_lease else None,
        "new_status": int(event.status), "from": source,
        "task": task_id, "event_thread": event.thread_key, "fingerprint": event.fingerprint(),
        "body": payload,
    }
    # Locks in one order everywhere (threads, then calls), or PostgreSQL finds deadlocks.
    read = None
    if sql.accept is not None:   # PostgreSQL: the three statements below, and the read
        thread, rows = sql.accept.run_with_rows(conn, journaled)
        call_thread, outcome = thread.call_thread, thread.outcome
        read = thread_from_rows(thread.thread_key, rows) if rows else None
    else:
        thread = sql.bump_and_claim.run(conn, journaled).one()
        # The call's thread, which differs from the one just bumped only when another worker's
        # first event of the same call, naming another thread, committed in between.
        call_thread = sql.upsert_call.run(
            conn, {**journaled, "thread": thread.thread_key}).scalar_one()
        outcome = sql.journal_event.run(conn, journaled).scalar_one()
    thread_key = thread.thread_key
    params = {"thread": thread_key, "owner": owner, "now": now, "expires": now + lease}
    fresh = thread.version == 1 and call_thread == thread_key
    if take_lease and thread.lease_owner == owner:
        return outcome, thread_key, Claim(thread_key, owner, int(thread.version),
                                          took_over=False, fresh=fresh, read=read), None
    if thread.lease_expires_at is not None and thread.lease_expires_at < now:
        return outcome, thread_key, _take_over(conn, sql, params), None
    if take_lease or thread.lease_owner is not None:
        return outcome, thread_key, None, None
    # Free, and left free: the thread as this event left it (read by PostgreSQL's function).
    if fresh:
        read = first_event_thread(thread_key, event.interaction_id, payload)
    elif read is None:
        read = load_thread(session, thread_key)
    return outcome, thread_key, None, read


def thread_of(session: Db, call_id: str) -> str | None:
    conn, sql = _run(session)
    known = sql.call_of.run(conn, {"call": call_id}).first()
    return known.thread_key if known is not None else None


# --- the thread lease -----------------------------------------------------------------------


def claim_thread(
    session: Db, thread_key: str, owner: str, now: datetime, lease: timedelta
) -> Claim | None:
    """Take the thread's lease if it is free or expired (an atomic compare-and-set).

    `owner` names this one claim: two claims must never share it (see Services.new_owner).
    """
    conn, sql = _run(session)
    params = {"thread": thread_key, "owner": owner, "now": now, "expires": now + lease}
    version = sql.claim_free.run(conn, params).scalar()
    if version is not None:
        return Claim(thread_key, owner, int(version), took_over=False)
    return _take_over(conn, sql, params)


def _take_over(conn: Connection, sql: _Statements, params: dict[str, Any]) -> Claim | None:
    """Take an expired lease (its holder died or stalled): an answer may have been lost."""
    version = sql.claim_expired.run(conn, params).scalar()
    if version is None:
        return None
    return Claim(params["thread"], params["owner"], int(version), took_over=True)


def release_thread(session: Db, claim: Claim, version: int) -> bool:
    """Give the lease back, unless an event arrived since `version` was read (then keep it)."""
    conn, sql = _run(session)
    return sql.release.run(conn, {"thread": claim.thread_key, "owner": claim.owner,
                                  "seen_version": version}).rowcount == 1


@dataclass(frozen=True)
class Release:
    """What a release found. `released`: the lease is given back. Refused because events
    arrived since the thread was read: the lease is renewed, and `thread` is the thread read
    again, at `version`. Refused with no thread: the lease is lost (it expired, and another
    worker took the thread over)."""

    released: bool
    thread: ThreadState | None = field(default=None, repr=False)
    version: int = 0


def release_or_read_again(session: Db, thread: ThreadState, claim: Claim, version: int,
                          now: datetime, lease: timedelta) -> Release:
    """Give the lease back and store the calls' sync states (one transaction: once the lease
    is back, another worker may drive the thread, and no state of this read may land after
    its own), unless an event arrived since `version` was read: then keep the lease and read
    the thread again. On PostgreSQL one function call (worker.adapters.pg_step)."""
    conn, sql = _run(session)
    if sql.release_or_read is None:
        if release_thread(session, claim, version):
            save_sync_states(session, thread, now)
            return Release(True)
        return _read_again(session, claim, now, lease)
    release_sync = _changed_sync(thread.calls.values())
    out, rows = sql.release_or_read.run_with_rows(conn, {
        "thread": thread.key, "owner": claim.owner, "seen_version": version,
        "release_sync": _sync_rows(release_sync), "now": now, "expires": now + lease,
    })
    return _release_found(thread.key, out, rows, release_sync)


def _read_again(session: Db, claim: Claim, now: datetime, lease: timedelta) -> Release:
    """After a refused release: renew the lease and read the thread again, unless it is lost."""
    if not renew_lease(session, claim, now, lease):
        return Release(False)
    version = thread_version(session, claim.thread_key)
    return Release(False, load_thread(session, claim.thread_key), version)


def _release_found(thread_key: str, out: Any, rows: list[Any],
                   release_sync: list[tuple[CallState, CallSync]]) -> Release:
    """What a release function (worker.adapters.pg_step) returned, as a Release."""
    if out.released == 1:
        _mark_synced(release_sync, out.release_synced)
        return Release(True)
    if out.renewed == 1:
        return Release(False, thread_from_rows(thread_key, rows), int(out.current_version))
    return Release(False)


def abandon_lease(session: Db, claim: Claim) -> None:
    """Give the lease back after an error, so a retry need not wait for it to expire."""
    conn, sql = _run(session)
    sql.abandon.run(conn, {"thread": claim.thread_key, "owner": claim.owner})


def renew_lease(session: Db, claim: Claim, now: datetime, lease: timedelta) -> bool:
    conn, sql = _run(session)
    return sql.renew.run(conn, {"thread": claim.thread_key, "owner": claim.owner,
                                "expires": now + lease}).rowcount == 1


def thread_version(session: Db, thread_key: str) -> int:
    conn, sql = _run(session)
    return int(sql.version.run(conn, {"thread": thread_key}).scalar() or 0)


# --- loading and saving the aggregate -------------------------------------------------------


def load_thread(session: Db, thread_key: str) -> ThreadState:
    conn, sql = _run(session)
    return thread_from_rows(thread_key, sql.thread_rows.run(conn, {"thread": thread_key}).all())


def thread_from_rows(thread_key: str, rows: Sequence[Any]) -> ThreadState:
    """The thread from the rows of its read (`thread_rows`), run alone or by the journal's
    function."""
    if not rows or rows[0].part != THREAD_PART:
        raise LookupError(f"no thread {thread_key!r}")
    # Calls in the order their first event was journaled; a call with none is not in the thread.
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    stored: dict[str, str] = {}
    legs: dict[str, dict[str, Leg]] = defaultdict(dict)
    for row in rows:
        if row.part == LEGS_PART:
            legs[row.interaction_id][row.leg] = Leg(
                state=LegState(row.state), remote_id=row.remote_id, attempts=row.attempts,
                next_attempt_at=row.next_attempt_at, error=row.error,
            )
        elif row.interaction_id is not None:
            events[row.interaction_id].append(json.loads(row.payload))
            stored[row.interaction_id] = row.sync_state
    top = rows[0]
    state = ThreadState(
        key=thread_key, top_level_id=top.top_level_interaction_id,
        top_level_call_id=top.top_level_call_id,
    )
    for call_id, call_events in events.items():
        call = CallState(call_id, merge_events(call_events),
                         stored_sync=CallSync(stored[call_id]))
        call.legs.update(legs[call_id])
        state.calls[call_id] = call
    return state


def first_event_thread(thread_key: str, call_id: str, payload: str) -> ThreadState:
    """What load_thread returns for a thread whose only event is `payload`, without reading it
    back: a fresh claim's thread (see Claim.fresh) has no other call, leg or top-level yet."""
    call = CallState(call_id, merge_events([json.loads(payload)]), stored_sync=CallSync.PENDING)
    return ThreadState(key=thread_key, calls={call_id: call})


def save_step(
    session: Db, thread: ThreadState, call: CallState,
    legs: Mapping[str, tuple[str | None, str | None]],
    requests: Sequence[tuple[str, RequestRecord]], *, now: datetime,
    holder: Claim | None = None, lease_until: datetime | None = None,
    top_level_changed: bool = True,
) -> bool:
    """Commit what one or more steps of a call changed: the legs they moved (each with its
    error class and CRM request id, None when it went well), the thread's top-level, their
    requests (each with the legs its step changed).

    With a `holder`, its lease is extended to `lease_until` in the same statement; returns
    False when the lease is someone else's now (the step's result is saved all the same).
    Without a holder and with the top-level unchanged, neither the thread's row nor the call's
    sync state is written: the caller releases the thread next in the same transaction, and
    that release writes the thread before save_sync_states writes the calls (threads before
    calls, the one lock order; a call locked first deadlocks with an event being journaled).
    """
    conn, sql = _run(session)
    sql.upsert_legs.run(conn, _leg_rows(call, legs, now))
    owner = None
    if holder is not None or top_level_changed:
        owner = sql.save_top_level.run(conn, {
            "thread": thread.key, "top_level_id": thread.top_level_id,
            "top_level_call": thread.top_level_call_id, "now": now,
            "owner": holder.owner if holder else None, "expires": lease_until,
        }).scalar()
        _save_sync(conn, sql, [call], now)
    if requests:
        sql.requests.run(conn, _request_rows(call, requests, now))
    return holder is None or owner == holder.owner


def save_step_and_release(
    session: Db, thread: ThreadState, call: CallState,
    legs: Mapping[str, tuple[str | None, str | None]],
    requests: Sequence[tuple[str, RequestRecord]], *, now: datetime,
    lease: timedelta, holder: Claim | None = None, top_level_changed: bool = True,
    release: Claim | None = None, version: int = 0,
) -> tuple[bool, Release]:
    """save_step (the `holder`'s lease extended by `lease`), then with `release` what
    release_or_read_again does.

    Returns (the lease still held, as save_step says; what the release found: not released
    when none was asked for). On PostgreSQL one call of a function (worker.adapters.pg_step)
    makes the same writes in the same order.
    """
    conn, sql = _run(session)
    if sql.save_results is None:
        held = save_step(session, thread, call, legs, requests, now=now, holder=holder,
                         lease_until=now + lease, top_level_changed=top_level_changed)
        if release is None:
            return held, Release(False)
        return held, release_or_read_again(session, thread, release, version, now, lease)
    write_top_level = holder is not None or top_level_changed
    step_sync = _changed_sync([call]) if write_top_level else []
    # Written by the step's own part already (or not at all: then the call moved on, and the
    # thread's version with it, so the release does not happen).
    release_sync = [(c, state) for c, state in _changed_sync(thread.calls.values())
                    if not (step_sync and c is call)]
    out, rows = sql.save_results.run_with_rows(conn, {
        "legs": _json_rows(_leg_rows(call, legs, now)),
        "requests": _json_rows(_request_rows(call, requests, now)),
        "thread": thread.key, "write_top_level": write_top_level,
        "top_level_id": thread.top_level_id, "top_level_call": thread.top_level_call_id,
        "holder": holder.owner if holder else None, "expires": now + lease, "now": now,
        "step_sync": _sync_rows(step_sync),
        "release": release is not None, "owner": release.owner if release else None,
        "seen_version": version, "release_sync": _sync_rows(release_sync),
    })
    _mark_synced(step_sync, out.step_synced)
    held = holder is None or out.lease_owner == holder.owner
    return held, _release_found(thread.key, out, rows, release_sync)


def _leg_rows(call: CallState, legs: Mapping[str, tuple[str | None, str | None]],
              now: datetime) -> list[dict[str, Any]]:
    return [
        {"interaction_id": call.interaction_id, "leg": name, "state": leg.state.value,
         "remote_id": leg.remote_id, "attempts": leg.attempts, "error": leg.error,
         "error_kind": error_kind, "request_id": request_id,
         "next_attempt_at": leg.next_attempt_at, "updated_at": now}
        for name, (error_kind, request_id) in sorted(legs.items())
        for leg in (call.legs[name],)
    ]


def _request_rows(call: CallState, requests: Sequence[tuple[str, RequestRecord]],
                  now: datetime) -> list[dict[str, Any]]:
    return [
        {"at": now, "interaction_id": call.interaction_id, "leg": step_legs, "crm": r.crm,
         "method": r.method, "path": r.path[:500], "status_code": r.status_code,
         "duration_ms": r.duration_ms, "error": r.error}
        for step_legs, r in requests
    ]


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a JSON argument: a datetime as ISO 8601, which PostgreSQL reads back as the
    timestamp it was (naive UTC, as the columns hold)."""
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            for row in rows]


def _sync_rows(changed: list[tuple[CallState, CallSync]]) -> list[dict[str, Any]]:
    return [{"interaction_id": call.interaction_id, "sync_state": state.value,
             "status": int(call.status)} for call, state in changed]


def _mark_synced(changed: list[tuple[CallState, CallSync]], written: int) -> None:
    """What the database now holds, as far as the count tells (None: read it again)."""
    for call, state in changed:
        call.stored_sync = state if written == len(changed) else None


def save_sync_states(session: Db, thread: ThreadState, now: datetime) -> None:
    """Store each call's sync state where it changed (a call whose event needed no step)."""
    conn, sql = _run(session)
    _save_sync(conn, sql, thread.calls.values(), now)


def sync_states_changed(thread: ThreadState) -> bool:
    """Whether a release would write any call's sync state."""
    return bool(_changed_sync(thread.calls.values()))


def _changed_sync(calls: Iterable[CallState]) -> list[tuple[CallState, CallSync]]:
    return [(call, state) for call in calls
            if (state := call.sync_state()) is not call.stored_sync]


def _save_sync(conn: Connection, sql: _Statements, calls: Iterable[CallState],
               now: datetime) -> None:
    """UPDATE only the calls whose state differs from what was read (the WHERE re-checks)."""
    for call, state in _changed_sync(calls):   # nearly always one: a statement each is cheapest
        written = sql.save_sync.run(conn, {"call": call.interaction_id, "sync": state.value,
                                           "read_status": int(call.status), "now": now})
        # Not written: the call moved on (the next read tells its state) or already held it.
        call.stored_sync = state if written.rowcount == 1 else None


# --- poison messages ------------------------------------------------------------------------


def begin_delivery(session: Db, key: str, now: datetime) -> int:
    """Count one more started delivery of `key`; returns how many were unfinished before it."""
    conn, sql = _run(session)
    return int(sql.begin_delivery.run(conn, {"delivery": key, "now": now}).scalar_one()) - 1


def end_delivery(session: Db, key: str) -> None:
    conn, sql = _run(session)
    sql.end_delivery.run(conn, {"delivery": key})


def journal_poison(
    session: Db, *, payload: str, interaction_id: str | None, error: str, now: datetime,
) -> None:
    conn, sql = _run(session)
    conn.execute(sql.journal, {
        "received_at": now, "source": "quarantine", "task_id": None,
        "interaction_id": interaction_id, "payload": payload, "outcome": "poison",
        "error": error,
    })


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
    "LEGS", "Claim", "Release", "RequestRecord", "accept_event", "claim_thread",
    "journal_rejected", "load_thread", "release_or_read_again", "release_thread", "renew_lease",
    "save_step", "save_step_and_release", "save_sync_states", "sync_states_changed", "thread_of",
    "thread_version", "threads_due",
]
