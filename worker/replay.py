"""Operator replay: resume stuck calls from their last completed step, or re-send mapped fields.

One function, `replay`, serves both `callsync replay` and the `callsync.replay` task.

- default: the selected calls' stuck legs (failed, parked, retrying) go back to `pending` with
  their attempt count kept. `attempts > 0` makes the service look a record up before it creates
  one, so a replay resumes a call and never makes a second record. Then the thread is driven.
- dry run: the same reset in memory only, then the planner is walked to list every request a
  real replay would send, to which CRM. Nothing is written and nothing is sent.
- resync: calls whose Oracle interaction exists get its current mapped fields as a PATCH (after
  a mapping fix). Caliq has no update endpoint, so it is not resynced.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from worker.adapters import queries
from worker.adapters import repository as repo
from worker.adapters.http import RemoteError
from worker.domain.plan import LEGS, CallState, LegState, Step, StepKind, ThreadState, next_step
from worker.mapping import PayloadError
from worker.service import Services, drive_thread

log = structlog.get_logger("callsync.replay")

DEFAULT_STATES = ("failed", "parked")
OK_STATES = ("synced", "open")
_NEW = -1  # a top-level the dry run pretends to have created
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
STEP_REQUEST: dict[StepKind, tuple[str, str, str]] = {
    StepKind.CREATE_TOP_LEVEL: ("oracle", "POST", "interactions"),
    StepKind.CREATE_PLACEHOLDER: ("oracle", "POST", "interactions"),
    StepKind.ADOPT_TOP_LEVEL: ("oracle", "PATCH", "interactions/{top}"),
    StepKind.CREATE_CHILD: ("oracle", "POST", "interactions/{top}/child/childInteractions"),
    StepKind.END_INTERACTION: ("oracle", "PATCH", "interactions/{own}"),
    StepKind.CREATE_PHONE_CALL: ("oracle", "POST", "phoneCalls"),
    StepKind.CREATE_CALIQ: ("caliq", "POST", "api/v1/InteractionCreate"),
}


def parse_when(text: str | None, now: datetime) -> datetime | None:
    """`30m`, `2h`, `7d` (that long before now) or ISO 8601; naive UTC like the columns."""
    if text is None or not text.strip():
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: not a time (ISO 8601, or 30m / 2h / 7d ago)") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Selection:
    """Which calls: every filter given must match. Empty for a replay means failed + parked."""

    ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    legs: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.states if s not in queries.STATE_FILTERS]
        if bad:
            raise ValueError(f"unknown state {bad[0]!r}; one of {sorted(queries.STATE_FILTERS)}")
        bad = [leg for leg in self.legs if leg not in LEGS]
        if bad:
            raise ValueError(f"unknown leg {bad[0]!r}; one of {list(LEGS)}")

    @property
    def empty(self) -> bool:
        return not (self.ids or self.states or self.legs or self.since or self.until)


@dataclass(frozen=True)
class Request:
    crm: str
    method: str
    path: str
    step: str = ""
    status: int | None = None
    look_up_first: bool = False


@dataclass
class CallResult:
    interaction_id: str
    thread_key: str
    before: str
    after: str | None = None
    # ok | failed | retrying | pending | busy | skipped | would_send | nothing_to_send | error
    outcome: str = "ok"
    reset: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None
    selected: bool = True

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "retrying", "error")


@dataclass
class Report:
    mode: str                                  # replay | dry-run | resync | resync dry-run
    results: list[CallResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.results)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "counts": self.counts(), "failed": self.failed,
                "calls": [asdict(r) for r in self.results]}


def replay(
    svc: Services, selection: Selection, *, dry_run: bool = False, resync: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_result: Callable[[CallResult], None] | None = None,
) -> Report:
    """Select the calls, then per thread: list, re-send fields, or reset and drive."""
    structlog.contextvars.unbind_contextvars("interaction_id", "thread", "leg")
    if resync and selection.empty:
        raise ValueError("a resync PATCHes every selected call: give ids, --state, --since "
                         "or --until (use --dry-run to see what it would send)")
    if selection.empty:
        selection = Selection(states=DEFAULT_STATES, limit=selection.limit)
    with svc.transaction() as s:
        targets = queries.select_calls(
            s, ids=selection.ids, states=selection.states, legs=selection.legs,
            since=selection.since, until=selection.until, limit=selection.limit)
    if on_total:
        on_total(len(targets))
    report = Report(("resync" if resync else "replay") + (" dry-run" if dry_run else ""))
    threads: dict[str, list[queries.Target]] = {}
    for target in targets:
        threads.setdefault(target.thread_key, []).append(target)
    legs = selection.legs or LEGS
    for thread_key, calls in threads.items():
        if dry_run:
            results = _dry_run(svc, thread_key, calls, legs, resync)
        elif resync:
            results = _resync(svc, thread_key, calls)
        else:
            results = _replay_thread(svc, thread_key, calls, legs)
        for result in results:
            report.results.append(result)
            if on_result:
                on_result(result)
    log.info("replay finished", mode=report.mode, **report.counts())
    return report


# --- the default: reset and drive -----------------------------------------------------------


def _replay_thread(
    svc: Services, thread_key: str, calls: list[queries.Target], legs: tuple[str, ...]
) -> list[CallResult]:
    results = {t.interaction_id: CallResult(t.interaction_id, thread_key, t.sync_state)
               for t in calls}
    started = svc.clock()
    try:
        with svc.transaction() as s:
            for target in calls:
                results[target.interaction_id].reset = queries.reset_legs(
                    s, target.interaction_id, legs, started)
        driven = drive_thread(svc, thread_key)
    except Exception as exc:  # one bad thread must not stop a replay of thousands
        log.exception("replay of thread failed", thread=thread_key)
        for result in results.values():
            result.outcome, result.error = "error", svc.scrub(f"{type(exc).__name__}: {exc}")
        return list(results.values())
    ids = list(results)
    with svc.transaction() as s:
        after = queries.call_sync_states(s, ids)
        errors = queries.first_errors(s, ids)
        sent = queries.requests_since(s, ids, started)
    for row in sent:
        results[row.interaction_id].requests.append(
            Request(row.crm, row.method, row.path, row.leg, row.status_code))
    for call_id, result in results.items():
        result.after = after.get(call_id)
        if driven.busy:
            result.outcome = "busy"   # its lease holder re-reads the thread (version bumped)
        elif result.after in OK_STATES:
            result.outcome = "ok"
        else:
            result.outcome = {"failed": "failed", "parked": "failed",
                              "retrying": "retrying"}.get(result.after or "", "pending")
            result.error = errors.get(call_id)
    return list(results.values())


# --- dry run: what would be sent ------------------------------------------------------------


def _dry_run(
    svc: Services, thread_key: str, calls: list[queries.Target], legs: tuple[str, ...],
    resync: bool,
) -> list[CallResult]:
    with svc.transaction() as s:
        thread = repo.load_thread(s, thread_key)
    results = {t.interaction_id: CallResult(t.interaction_id, thread_key, t.sync_state,
                                            outcome="nothing_to_send") for t in calls}
    if resync:
        for call_id, result in results.items():
            remote = _resync_target(thread.calls.get(call_id))
            if remote is None:
                result.outcome, result.error = "skipped", "not in Oracle yet"
            else:
                result.outcome = "would_send"
                result.requests.append(Request("oracle", "PATCH", f"interactions/{remote}",
                                               "resync"))
        return list(results.values())
    for call_id, result in results.items():
        call = thread.calls.get(call_id)
        for name in legs if call is not None else ():
            leg = call.legs[name]
            if leg.state.value in queries.RESETTABLE:
                leg.state, leg.error, leg.next_attempt_at = LegState.PENDING, None, None
                result.reset.append(name)
    for call_id, request in planned_requests(thread, svc.clock()):
        result = results.setdefault(call_id, CallResult(
            call_id, thread_key, "", outcome="would_send", selected=False))
        result.outcome = "would_send"
        result.requests.append(request)
    return list(results.values())


def planned_requests(thread: ThreadState, now: datetime) -> list[tuple[str, Request]]:
    """Every request driving `thread` would send now, in order, per call. Changes `thread`."""
    planned = []
    for _ in range(len(thread.calls) * (len(StepKind) + 1)):   # a bound, not a budget
        step = next_step(thread, now)
        if step is None:
            break
        planned.append((step.call_id, _describe(thread, step)))
        _pretend(thread, step)
    return planned


def _describe(thread: ThreadState, step: Step) -> Request:
    call = thread.calls[step.call_id]
    crm, method, path = STEP_REQUEST[step.kind]
    top = thread.top_level_id
    own = call.legs["oracle_interaction"].remote_id
    path = path.format(top="{new}" if top in (None, _NEW) else top, own=own or "{new}")
    if step.kind in (StepKind.CREATE_TOP_LEVEL, StepKind.CREATE_PLACEHOLDER):
        look = thread.top_level_in_doubt()
    else:
        look = step.kind in (StepKind.CREATE_CHILD, StepKind.CREATE_PHONE_CALL) and \
            call.legs[step.leg].maybe_applied
    return Request(crm, method, path, step.kind.value, look_up_first=look)


def _pretend(thread: ThreadState, step: Step) -> None:
    """Mark the step done in memory the way the service would, so the walk moves on."""
    call = thread.calls[step.call_id]
    kind = step.kind
    if kind is StepKind.CREATE_PLACEHOLDER:
        thread.top_level_id = _NEW
        return
    if kind is StepKind.CREATE_TOP_LEVEL:
        thread.top_level_id = _NEW
    if kind in (StepKind.CREATE_TOP_LEVEL, StepKind.ADOPT_TOP_LEVEL):
        thread.top_level_call_id = call.interaction_id
    done = [step.leg]
    if step.leg == "oracle_interaction" and call.stopped:
        done.append("oracle_end")   # a create or adopt with a STOPPED event closes it too
    for name in done:
        call.legs[name].state = LegState.DONE


# --- resync: PATCH current fields -----------------------------------------------------------


def _resync_target(call: CallState | None) -> str | None:
    if call is None:
        return None
    leg = call.legs["oracle_interaction"]
    return leg.remote_id if leg.done and leg.remote_id else None


def _resync(svc: Services, thread_key: str, calls: list[queries.Target]) -> list[CallResult]:
    results = [CallResult(t.interaction_id, thread_key, t.sync_state) for t in calls]
    # Under the thread's lease: a worker closing the same interaction must not interleave.
    with svc.transaction() as s:
        claim = repo.claim_thread(s, thread_key, svc.new_owner(), svc.clock(), svc.lease)
    if claim is None:
        for result in results:
            result.outcome, result.error = "busy", "a worker holds the thread; try again"
        return results
    try:
        with svc.transaction() as s:
            thread = repo.load_thread(s, thread_key)
        for result in results:
            _resync_call(svc, thread, result)
    finally:
        with svc.transaction() as s:
            moved = not repo.release_thread(s, claim, claim.version)
            if moved:
                queries.force_release(s, thread_key, claim.owner)
        if moved:   # an event arrived while we held the lease: its task found it busy
            drive_thread(svc, thread_key)
    return results


def _resync_call(svc: Services, thread: ThreadState, result: CallResult) -> None:
    call = thread.calls.get(result.interaction_id)
    remote = _resync_target(call)
    result.after = result.before
    if call is None or remote is None:
        result.outcome, result.error = "skipped", "not in Oracle yet"
        return
    sent: list[repo.RequestRecord] = []
    try:
        body = svc.mappings.oracle_interaction(call.event, thread_key=thread.key,
                                               closed=call.stopped)
        svc.oracle.update_interaction(int(remote), body, sent.append)
    except (RemoteError, PayloadError) as exc:
        result.outcome, result.error = "failed", svc.scrub(str(exc))
    with svc.transaction() as s:
        queries.record_requests(s, call.interaction_id, "resync", sent, svc.clock())
    result.requests = [Request(r.crm, r.method, r.path, "resync", r.status_code) for r in sent]
