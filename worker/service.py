"""The service layer: receive an event, then drive its thread until nothing more can be done.

Thin orchestration over the pure domain (worker.domain), the mapping layer (worker.mapping) and
the adapters (worker.adapters). Celery tasks and the CLI call these functions and nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.adapters import repository as repo
from worker.adapters.caliq import CaliqClient
from worker.adapters.http import ErrorKind, Recorder, RemoteError
from worker.adapters.oracle import OracleClient
from worker.domain.events import EventError, Status, validate_event
from worker.domain.plan import (
    CallState,
    Leg,
    LegState,
    Step,
    StepKind,
    ThreadState,
    next_step,
)
from worker.mapping import Mappings, PayloadError

log = structlog.get_logger("callsync")
_PINNED: ContextVar[Connection | None] = ContextVar("callsync_connection", default=None)

RETRY_BASE_SECONDS = 2.0


def utcnow() -> datetime:
    """Naive UTC: what the DateTime columns hold on both SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Services:
    """Everything the service layer talks to, built once per process (see worker.bootstrap)."""

    sessions: sessionmaker[Session]
    oracle: OracleClient
    caliq: CaliqClient
    mappings: Mappings
    lease: timedelta = timedelta(seconds=120)
    retry_backoff_max: float = 300.0
    retry_max_attempts: int = 25
    redelivery_cap: int = 5
    secrets: tuple[str, ...] = ()
    clock: Callable[[], datetime] = utcnow
    owner: str = field(default_factory=lambda: f"{uuid.uuid4().hex[:12]}")
    _claims: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def new_owner(self) -> str:
        """A lease owner for one claim: this process, and which of its claims (threads in a
        pool share the process, and a claim tells its own lease by this name)."""
        return f"{self.owner}.{next(self._claims)}"

    @property
    def engine(self) -> Engine:
        return self.sessions.kw["bind"]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """An ORM session's transaction: for operators' queries and the sweep."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def connection_transaction(self) -> Iterator[Connection]:
        """A transaction on a Core connection: the hot path's, without an ORM session's
        bookkeeping (about a tenth of an event's CPU when profiled)."""
        pinned = _PINNED.get()
        if pinned is not None:
            with pinned.begin():
                yield pinned
            return
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """Statements each of which is safe on its own: what must commit together is one
        statement (on PostgreSQL a function of several, worker.adapters.pg_function).

        On PostgreSQL each commits by itself (autocommit): a transaction of one statement
        costs its BEGIN and COMMIT, two round trips that cost as much as the statement (see
        docs/performance-history.md). On SQLite they share one transaction, as before: its
        BEGIN IMMEDIATE takes the writer lock once, and SQLite has no round trips to save.
        """
        with self.one_connection():
            conn = _PINNED.get()
            assert conn is not None
            if conn.in_transaction():   # within a transaction already: that one
                yield conn
                return
            raw = conn.connection.dbapi_connection if conn.dialect.name == "postgresql" else None
            if raw is None:
                with self.connection_transaction() as s:
                    yield s
                return
            raw.autocommit = True
            try:
                yield conn
                if conn.in_transaction():   # SQLAlchemy's own autobegin: nothing open on the server
                    conn.commit()
            except BaseException:
                if conn.in_transaction():
                    conn.rollback()
                raise
            finally:
                with contextlib.suppress(Exception):   # a connection just lost cannot be set
                    raw.autocommit = False

    @contextmanager
    def one_connection(self) -> Iterator[None]:
        """Run every transaction within on one pooled connection.

        A task's transactions then check a connection out once, not once each (and a
        PostgreSQL connection idle for a while is pinged once, see adapters.db).
        The connection stays idle, outside any transaction, while a CRM request is in flight.
        """
        if _PINNED.get() is not None:
            yield
            return
        with self.engine.connect() as connection:
            token = _PINNED.set(connection)
            try:
                yield
            finally:
                _PINNED.reset(token)

    def scrub(self, text: str) -> str:
        """Belt and braces: no secret survives into a stored or logged message."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


# --- receiving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    outcome: str                 # accepted | duplicate | stale | rejected
    thread_key: str | None = None
    interaction_id: str | None = None
    error: str | None = None
    status: str | None = None    # the event's status, by name


def _journal_event(
    svc: Services, s: repo.Db, raw: Any, *, source: str, task_id: str | None
) -> tuple[Received, repo.Claim | None, str, ThreadState | None]:
    """Journal the event (always); for a valid one record its call and thread, and claim the
    thread unless another worker holds it (or the event takes no lease, see _TAKES_NO_LEASE).
    Returns the payload as journaled, and a thread left unclaimed as the event left it."""
    structlog.contextvars.unbind_contextvars("interaction_id", "thread", "leg")
    payload = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    try:
        event = validate_event(json.loads(raw) if isinstance(raw, str) else raw)
    except (EventError, json.JSONDecodeError) as exc:
        call_id = raw.get("interaction_id") if isinstance(raw, dict) else None
        call_id = call_id if isinstance(call_id, str) else None
        error = svc.scrub(str(exc) if isinstance(exc, EventError)
                          else f"event: not valid JSON ({exc.msg})")
        repo.journal_rejected(s, payload=payload, error=error, source=source,
                              task_id=task_id, interaction_id=call_id, now=svc.clock())
        return Received("rejected", interaction_id=call_id, error=error), None, payload, None
    outcome, thread_key, claim, unclaimed = repo.accept_event(
        s, event, payload=payload, source=source, task_id=task_id, now=svc.clock(),
        owner=svc.new_owner(), lease=svc.lease,
        take_lease=event.status not in _TAKES_NO_LEASE)
    received = Received(outcome, thread_key, event.interaction_id, status=event.status.name)
    return received, claim, payload, unclaimed


# An IN_PROCESS event says only that a call goes on: unless it is its call's first event, it
# gives its thread no work, and a thread that needs nothing need not be claimed and given back
# (a round trip each on PostgreSQL). Its worker journals it without taking the lease and looks
# at the thread as the journal left it; only a thread that turns out to need something is then
# claimed and read, as drive_thread does. Safe either way: the event moved the thread's
# version, so whoever holds the lease or takes it next sees the event.
_TAKES_NO_LEASE = frozenset({Status.IN_PROCESS})


def _report_received(received: Received) -> None:
    """Logged and counted once the journal entry is committed."""
    metrics.EVENTS.labels(received.outcome).inc()
    if received.outcome == "rejected":
        log.warning("event rejected", interaction_id=received.interaction_id,
                    error=received.error)
        return
    structlog.contextvars.bind_contextvars(interaction_id=received.interaction_id,
                                           thread=received.thread_key)
    log.info("event received", status=received.status, outcome=received.outcome)


# --- driving a thread -----------------------------------------------------------------------
#
# A drive holds the thread's lease from its first transaction to its last. Each transaction
# ends by asking the planner for the next step; when there is none, the same transaction gives
# the lease back, so an event that needs no request costs one transaction in all (journal,
# claim, read, release) and every step one more (its result, and the release after the last).
# On PostgreSQL the first of these is statements each committed alone (Services.statements):
# the journal with its claim and read, and the release with the calls' sync states. A release
# refused because events arrived renews the lease and reads the thread again in its own call.


@dataclass
class Driven:
    thread_key: str
    busy: bool = False           # another worker holds the thread; it will see our event
    steps: int = 0
    retry_at: datetime | None = None  # the earliest back-off that ends, if any leg waits


@dataclass
class _Lease:
    """A claimed thread, as last read, and the version of it that reading saw."""

    claim: repo.Claim
    thread: ThreadState
    version: int
    released: bool = False
    answer_unsaved: bool = False   # a request went out and its answer is not committed yet


def drive_thread(svc: Services, thread_key: str) -> Driven:
    """Do everything the thread needs now, under its lease; never twice, never concurrently."""
    claims: list[repo.Claim] = []
    with svc.one_connection():
        # Claim and read the thread (no lease: another worker holds it), releasing it if idle.
        with _giving_back(svc, claims), svc.statements() as s:
            lease = None
            claim = repo.claim_thread(s, thread_key, svc.new_owner(), svc.clock(), svc.lease)
            if claim is not None:
                claims.append(claim)
                lease = _read_claimed(svc, s, claim)
        return _drive(svc, lease, Driven(thread_key))


@contextmanager
def _giving_back(svc: Services, claims: list[repo.Claim]) -> Iterator[None]:
    """Give back a claim that an error interrupts before its drive starts (a drive decides
    for itself, and may keep a lease on purpose). On PostgreSQL the claim was committed on its
    own (Services.statements): a retry would find the thread busy until the lease expires. On
    SQLite the error rolled the claim back with its transaction: nothing to give back."""
    try:
        yield
    except Exception:
        for claim in claims:
            with contextlib.suppress(Exception), svc.connection_transaction() as s:
                repo.abandon_lease(s, claim)
        raise


def _read_claimed(svc: Services, s: repo.Db, claim: repo.Claim,
                  journaled: tuple[str, str] | None = None) -> _Lease:
    """Read the claimed thread, unless the claim read it already, or `journaled` (call id,
    payload) is all it holds: the event that created it (a fresh claim) is not read back."""
    if claim.read is not None:   # read by the claim's own statement (PostgreSQL's journal)
        thread = claim.read
    elif journaled is not None and claim.fresh:
        thread = repo.first_event_thread(claim.thread_key, *journaled)
    else:
        thread = repo.load_thread(s, claim.thread_key)
    lease = _Lease(claim, thread, claim.version)
    _release_if_idle(svc, s, lease)   # claimed a moment ago: lost only if it expired meanwhile
    return lease


def _release_if_idle(svc: Services, s: repo.Db, lease: _Lease) -> bool:
    """When no step is due now, store the calls' sync states and give the lease back, unless
    events arrived since the thread was read: then look again at the thread as read anew.

    False when the lease turns out lost; the caller lets its transaction commit first.
    """
    while next_step(lease.thread, svc.clock()) is None:
        # The release and the sync states it makes final commit together: once the lease is
        # back, another worker may drive the thread, and a state from this read must not land
        # after that worker's. An event that arrived since the read may have given a call work
        # again: no state is written from this read then, and the thread is read again.
        found = repo.release_or_read_again(s, lease.thread, lease.claim, lease.version,
                                           svc.clock(), svc.lease)
        if not _take(lease, found):
            return False
        if lease.released:
            return True
    return True


def _take(lease: _Lease, found: repo.Release) -> bool:
    """What a release found: the lease given back, or kept with the thread as read again.
    False when the lease turns out lost."""
    if found.released:
        lease.released = True
    elif found.thread is not None:
        lease.thread, lease.version = found.thread, found.version
    else:
        return False
    return True


def _drive(svc: Services, lease: _Lease | None, result: Driven) -> Driven:
    if lease is None:
        result.busy = True
        return result
    bound = log.bind(thread=result.thread_key)
    if lease.claim.took_over:
        bound.warning("lease taken over from a worker that did not finish")
    try:
        while not lease.released:
            step = next_step(lease.thread, svc.clock())
            if step is None:   # the clock stepped back since the last look: settle again
                with svc.connection_transaction() as s:
                    held = _release_if_idle(svc, s, lease)
            else:
                held, steps = _run_steps(svc, lease, step)
                result.steps += steps
            if not held:   # it expired and another worker took the thread over: it carries on
                bound.warning("lease lost; stopping")
                return result
    except Exception:
        if lease.answer_unsaved:
            # A CRM may hold a record that the database does not know of. The lease is kept
            # until it expires, as when a worker dies mid-request: whoever takes the thread
            # over then looks the record up before creating it (never a duplicate).
            bound.error("step result not saved; lease kept until it expires")
        else:
            # A database or programming error: free the thread now rather than at expiry.
            with contextlib.suppress(Exception), svc.connection_transaction() as s:
                repo.abandon_lease(s, lease.claim)
        raise
    result.retry_at = _retry_at(lease.thread)
    return result


def _retry_at(thread: ThreadState) -> datetime | None:
    """The earliest back-off that ends, if any leg waits for one."""
    return min((leg.next_attempt_at for call in thread.calls.values()
                for leg in call.legs.values()
                if leg.state is LegState.RETRY and leg.next_attempt_at is not None),
               default=None)


# Steps that may follow another of the same call in one batch: sent one after the other, their
# answers committed together. Each is safe to repeat after a lost answer (a PATCH, a phoneCall
# looked up first, a Caliq duplicate taken as success), so a batch cut short by a dead worker
# is recovered by the heir like a single step.
_FOLLOWERS = frozenset({StepKind.END_INTERACTION, StepKind.CREATE_PHONE_CALL,
                        StepKind.CREATE_CALIQ})


@dataclass
class _StepOutcome:
    changed: set[str]
    error_kind: str | None = None
    request_id: str | None = None


def _run_steps(svc: Services, lease: _Lease, first: Step) -> tuple[bool, int]:
    """Perform `first` and the steps of the same call that follow it, then commit their
    results in one transaction. Returns (lease still held, steps performed)."""
    thread = lease.thread
    call = thread.calls[first.call_id]
    top_level = (thread.top_level_id, thread.top_level_call_id)
    outcomes: dict[str, _StepOutcome] = {}
    requests: list[tuple[str, repo.RequestRecord]] = []
    step: Step | None = first
    count = 0
    while step is not None:
        sent: list[repo.RequestRecord] = []
        outcome = _attempt(svc, lease, call, step, sent.append)
        count += 1
        label = ",".join(sorted(outcome.changed))
        requests += [(label, record) for record in sent]
        outcomes.update(dict.fromkeys(outcome.changed, outcome))
        lease.answer_unsaved = bool(requests)
        upcoming = next_step(thread, svc.clock())
        follows = (outcome.error_kind is None and upcoming is not None
                   and upcoming.call_id == call.interaction_id and upcoming.kind in _FOLLOWERS)
        step = upcoming if follows else None
    now = svc.clock()
    # After the last step the release checks the lease (and renews it if events came in);
    # the lease is only extended here while more steps follow.
    last = upcoming is None
    # One transaction for the results and the release after the last step (on PostgreSQL one
    # function call, in autocommit); what follows a release that found the thread moved is
    # statements each safe alone, as after the journal.
    with svc.statements() as s:
        # The steps' results are kept even if the lease was lost: the requests were made.
        held, found = repo.save_step_and_release(
            s, thread, call, {leg: (o.error_kind, o.request_id) for leg, o in outcomes.items()},
            requests, now=now, lease=svc.lease, holder=None if last else lease.claim,
            top_level_changed=top_level != (thread.top_level_id, thread.top_level_call_id),
            release=lease.claim if last else None, version=lease.version)
        if last:   # refused: an event arrived since the read (then look again), or lease lost
            held = _take(lease, found) and (lease.released or _release_if_idle(svc, s, lease))
    lease.answer_unsaved = False
    return held, count


def _attempt(svc: Services, lease: _Lease, call: CallState, step: Step,
             record: Recorder) -> _StepOutcome:
    """One step's request(s), its failure classified and recorded on the leg in memory."""
    leg = call.legs[step.leg]
    bound = log.bind(interaction_id=call.interaction_id, thread=lease.thread.key, leg=step.leg,
                     step=step.kind.value)
    try:
        changed = _perform(svc, lease.thread, call, step, lease.claim.took_over, record)
    except RemoteError as exc:
        _record_failure(svc, leg, exc)
        _count_failure(step.leg, leg.state, exc.kind.value)
        bound.warning("step failed", error_kind=exc.kind.value, error=leg.error,
                      attempts=leg.attempts, next_attempt_at=leg.next_attempt_at)
        return _StepOutcome({step.leg}, exc.kind.value, exc.request_id)
    except PayloadError as exc:
        leg.attempts += 1
        leg.state, leg.error = LegState.FAILED, svc.scrub(str(exc))
        _count_failure(step.leg, leg.state, ErrorKind.PERMANENT.value)
        bound.warning("step failed", error_kind=ErrorKind.PERMANENT.value, error=leg.error)
        return _StepOutcome({step.leg}, ErrorKind.PERMANENT.value)
    bound.info("step done", remote_id=leg.remote_id)
    metrics.STEPS.labels(step.leg, "done").inc()
    return _StepOutcome(changed)


def _count_failure(leg_name: str, state: LegState, kind: str) -> None:
    metrics.STEPS.labels(leg_name, state.value).inc()
    if state is LegState.RETRY:
        metrics.RETRIES.labels(leg_name).inc()
    else:
        metrics.FAILURES.labels(leg_name, kind).inc()


def _record_failure(svc: Services, leg: Any, exc: RemoteError) -> None:
    leg.attempts += 1
    leg.error = svc.scrub(str(exc))
    if exc.kind is ErrorKind.AUTH:
        leg.state, leg.next_attempt_at = LegState.PARKED, None
    elif exc.kind is ErrorKind.PERMANENT:
        leg.state, leg.next_attempt_at = LegState.FAILED, None
    elif leg.attempts >= svc.retry_max_attempts:
        leg.state, leg.next_attempt_at = LegState.FAILED, None
        leg.error = f"gave up after {leg.attempts} attempts: {leg.error}"
    else:
        leg.state = LegState.RETRY
        leg.next_attempt_at = svc.clock() + timedelta(
            seconds=backoff_seconds(leg.attempts, exc.retry_after, svc.retry_backoff_max)
        )


def backoff_seconds(attempts: int, retry_after: float | None, cap: float) -> float:
    """Exponential back-off with equal jitter, never sooner than the CRM's Retry-After."""
    ceiling = min(cap, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


def _done(call: CallState, *legs: str, remote_id: str | None) -> set[str]:
    for name in legs:
        leg = call.legs[name]
        leg.state, leg.remote_id, leg.error, leg.next_attempt_at = (
            LegState.DONE, remote_id, None, None
        )
    return set(legs)


def _reset(leg: Leg, name: str) -> set[str]:
    """The thread moved on (its top-level now exists); this call's own step is still to come."""
    leg.state, leg.error, leg.next_attempt_at = LegState.PENDING, None, None
    return {name}


def _perform(
    svc: Services, thread: ThreadState, call: CallState, step: Step, recovering: bool,
    record: Recorder,
) -> set[str]:
    """One foreign mutation. Creates look their record up first when an earlier try may have
    landed (a lost answer, or a worker that died mid-request), so a retry never duplicates."""
    oracle, m, event = svc.oracle, svc.mappings, call.event
    leg = call.legs[step.leg]
    suspect = recovering or leg.maybe_applied
    closes = ("oracle_interaction", "oracle_end") if call.stopped else ("oracle_interaction",)
    kind = step.kind

    if kind in (StepKind.CREATE_TOP_LEVEL, StepKind.CREATE_PLACEHOLDER):
        # One top-level per thread, whichever call opens it: if any earlier attempt in the
        # thread may have landed, look under every key it could carry before creating.
        if recovering or thread.top_level_in_doubt():
            for key in thread.top_level_keys():
                found = oracle.find_interaction(key, record)
                if found is not None:
                    thread.top_level_id = found
                    if kind is StepKind.CREATE_TOP_LEVEL and key == call.interaction_id:
                        thread.top_level_call_id = call.interaction_id
                        # Found, not created now: it may predate STOPPED, so end it apart.
                        return _done(call, "oracle_interaction", remote_id=str(found))
                    return _reset(leg, step.leg)   # someone else's: adopt it or hang under it
        if kind is StepKind.CREATE_PLACEHOLDER:
            thread.top_level_id = oracle.create_interaction(
                m.oracle_thread_placeholder(thread.key, event), record
            )
            return _reset(leg, step.leg)
        body = m.oracle_interaction(event, thread_key=thread.key, closed=call.stopped)
        interaction_id = oracle.create_interaction(body, record)
        thread.top_level_id, thread.top_level_call_id = interaction_id, call.interaction_id
        return _done(call, *closes, remote_id=str(interaction_id))

    if kind is StepKind.ADOPT_TOP_LEVEL:
        assert thread.top_level_id is not None
        body = m.oracle_interaction(event, thread_key=thread.key, closed=call.stopped)
        oracle.update_interaction(thread.top_level_id, body, record)
        thread.top_level_call_id = call.interaction_id
        return _done(call, *closes, remote_id=str(thread.top_level_id))

    if kind is StepKind.CREATE_CHILD:
        assert thread.top_level_id is not None
        body = m.oracle_interaction(event, thread_key=thread.key, closed=call.stopped)
        found = oracle.find_interaction(call.interaction_id, record) if suspect else None
        if found is not None:  # it may predate STOPPED: the end leg stays to do
            return _done(call, "oracle_interaction", remote_id=str(found))
        child_id = oracle.create_child_interaction(thread.top_level_id, body, record)
        return _done(call, *closes, remote_id=str(child_id))

    if kind is StepKind.END_INTERACTION:
        interaction_id = call.oracle_interaction_id
        assert interaction_id is not None
        oracle.update_interaction(
            interaction_id, m.oracle_interaction_end(event, thread_key=thread.key), record
        )
        return _done(call, "oracle_end", remote_id=str(interaction_id))

    if kind is StepKind.CREATE_PHONE_CALL:
        interaction_id = call.oracle_interaction_id
        assert interaction_id is not None
        body = m.oracle_phone_call(event, interaction_id=interaction_id)
        found = oracle.find_phone_call(call.interaction_id, record) if suspect else None
        phone_call_id = found or oracle.create_phone_call(body, record)
        return _done(call, "oracle_phone_call", remote_id=str(phone_call_id))

    if kind is StepKind.CREATE_CALIQ:
        svc.caliq.create_interaction(m.caliq_interaction(event), record)
        return _done(call, "caliq", remote_id=call.interaction_id)

    raise AssertionError(f"unknown step {kind}")


def quarantine(svc: Services, raw: Any, *, thread_key: str | None, reason: str) -> None:
    """Stop a message that keeps killing the worker: journal it, fail its call's open legs.

    The failed legs show in `callsync failures` and an operator's replay can re-drive them once
    the cause is fixed; meanwhile the message is acknowledged instead of looping forever.
    """
    call_id = raw.get("interaction_id") if isinstance(raw, dict) else None
    call_id = call_id if isinstance(call_id, str) else None
    now = svc.clock()
    with svc.connection_transaction() as s:
        payload = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        if thread_key is None or call_id is not None:
            repo.journal_poison(s, payload=payload, interaction_id=call_id, error=reason, now=now)
        key = thread_key or (repo.thread_of(s, call_id) if call_id else None)
        if key is None:
            return
        thread = repo.load_thread(s, key)
        for call in thread.calls.values():
            if call_id is not None and call.interaction_id != call_id:
                continue
            open_legs = [name for name, leg in call.legs.items()
                         if leg.state in (LegState.PENDING, LegState.RETRY)]
            for name in open_legs:
                leg = call.legs[name]
                leg.state, leg.error, leg.next_attempt_at = LegState.FAILED, reason, None
            if open_legs:
                repo.save_step(s, thread, call, dict.fromkeys(open_legs, ("poison", None)), [],
                               now=now)
                _count_failure(open_legs[0], LegState.FAILED, "poison")
    log.error("message quarantined", interaction_id=call_id, thread=thread_key, error=reason)


def handle_event(
    svc: Services, raw: Any, *, source: str = "queue", task_id: str | None = None
) -> tuple[Received, Driven | None]:
    """Receive one event and drive its thread: what a Celery task or `callsync sync` runs."""
    claims: list[repo.Claim] = []
    with svc.one_connection():
        # Each statement safe alone: the journal's commits the event and the claim, whatever
        # happens next; the read is of a thread this claim holds, or that nobody holds.
        with _giving_back(svc, claims), svc.statements() as s:
            received, claim, payload, unclaimed = _journal_event(svc, s, raw, source=source,
                                                                 task_id=task_id)
            lease = None
            if claim is not None and received.interaction_id is not None:
                claims.append(claim)
                lease = _read_claimed(svc, s, claim, (received.interaction_id, payload))
        _report_received(received)
        if received.thread_key is None:
            return received, None
        if unclaimed is not None:
            if next_step(unclaimed, svc.clock()) is None and not repo.sync_states_changed(
                    unclaimed):
                return received, Driven(received.thread_key, retry_at=_retry_at(unclaimed))
            return received, drive_thread(svc, received.thread_key)
        return received, _drive(svc, lease, Driven(received.thread_key))


def due_threads(svc: Services, *, quiet_for: timedelta = timedelta(seconds=60),
                limit: int = 500) -> list[str]:
    with svc.transaction() as s:
        return repo.threads_due(s, svc.clock(), quiet_for, limit)
