"""What a conversation thread still needs, decided from its state alone.

A thread is the unit of consistency: it owns the one top-level Oracle interaction that all its
calls hang under, so a worker drives a whole thread at a time under one lease. The planner is a
pure function: it reads a `ThreadState` and names the next step; the service performs it, records
the outcome, and asks again. Each call has four legs, each a recovery point committed on its own:

    oracle_interaction -> oracle_end -> oracle_phone_call        caliq (independent of Oracle)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from worker.domain.events import Status, is_root_candidate

LEGS = ("oracle_interaction", "oracle_end", "oracle_phone_call", "caliq")


class LegState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    RETRY = "retry"      # transient failure; tried again at next_attempt_at
    FAILED = "failed"    # permanent failure; only an operator's replay moves it
    PARKED = "parked"    # auth failure; waits for fixed credentials and a replay


class CallSync(StrEnum):
    """A call's overall state, stored for queries (failures, sweep, status)."""

    PENDING = "pending"    # work to do now
    OPEN = "open"          # the open interaction exists; waiting for STOPPED
    RETRYING = "retrying"  # waiting for a transient error's back-off
    FAILED = "failed"
    PARKED = "parked"
    SYNCED = "synced"      # every record exists


class StepKind(StrEnum):
    CREATE_TOP_LEVEL = "create_top_level"        # the root call becomes the thread's top-level
    CREATE_PLACEHOLDER = "create_placeholder"    # a consult came first: open the thread's top-level
    ADOPT_TOP_LEVEL = "adopt_top_level"          # the root arrives after a placeholder: PATCH it
    CREATE_CHILD = "create_child"
    END_INTERACTION = "end_interaction"
    CREATE_PHONE_CALL = "create_phone_call"
    CREATE_CALIQ = "create_caliq"


STEP_LEG = {
    StepKind.CREATE_TOP_LEVEL: "oracle_interaction",
    StepKind.CREATE_PLACEHOLDER: "oracle_interaction",
    StepKind.ADOPT_TOP_LEVEL: "oracle_interaction",
    StepKind.CREATE_CHILD: "oracle_interaction",
    StepKind.END_INTERACTION: "oracle_end",
    StepKind.CREATE_PHONE_CALL: "oracle_phone_call",
    StepKind.CREATE_CALIQ: "caliq",
}


@dataclass
class Leg:
    state: LegState = LegState.PENDING
    remote_id: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    error: str | None = None

    def runnable(self, now: datetime) -> bool:
        if self.state is LegState.PENDING:
            return True
        return self.state is LegState.RETRY and (
            self.next_attempt_at is None or self.next_attempt_at <= now
        )

    @property
    def done(self) -> bool:
        return self.state is LegState.DONE

    @property
    def maybe_applied(self) -> bool:
        """An earlier attempt may have reached the CRM even though no answer was recorded."""
        return self.attempts > 0 and not self.done


@dataclass
class CallState:
    interaction_id: str
    event: dict[str, Any]           # the merged view of every event received for the call
    legs: dict[str, Leg] = field(default_factory=lambda: {name: Leg() for name in LEGS})
    # The sync state the database held when the call was read (None: unknown). Lets a save
    # skip a statement that would change nothing; a stale value costs one redundant UPDATE.
    stored_sync: CallSync | None = None

    @property
    def status(self) -> Status:
        return Status(self.event["status"])

    @property
    def stopped(self) -> bool:
        return self.status is Status.STOPPED

    @property
    def oracle_interaction_id(self) -> int | None:
        remote = self.legs["oracle_interaction"].remote_id
        return int(remote) if remote is not None else None

    def sync_state(self) -> CallSync:
        legs = self.legs
        needed = LEGS if self.stopped else ("oracle_interaction",)
        if all(legs[name].done for name in needed):
            return CallSync.SYNCED if self.stopped else CallSync.OPEN
        states = {legs[name].state for name in needed}
        if LegState.PARKED in states:
            return CallSync.PARKED
        if LegState.FAILED in states:
            return CallSync.FAILED
        if LegState.RETRY in states:
            return CallSync.RETRYING
        return CallSync.PENDING


@dataclass
class ThreadState:
    key: str
    top_level_id: int | None = None
    top_level_call_id: str | None = None   # the call whose data the top-level carries
    calls: dict[str, CallState] = field(default_factory=dict)

    def ordered_calls(self) -> list[CallState]:
        """Root candidates first (the call named by the thread key before any other)."""
        return sorted(
            self.calls.values(),
            key=lambda c: (
                c.interaction_id != self.key,
                not is_root_candidate(c.event),
                c.event.get("start_date", ""),
                c.interaction_id,
            ),
        )

    def top_level_in_doubt(self) -> bool:
        """An earlier attempt to open the thread's top-level may have landed unseen."""
        return self.top_level_id is None and any(
            call.legs["oracle_interaction"].maybe_applied for call in self.calls.values()
        )

    def top_level_keys(self) -> list[str]:
        """Every MediaItemId a top-level of this thread can carry: the thread's, its roots'."""
        keys = [self.key]
        keys += [c.interaction_id for c in self.ordered_calls()
                 if is_root_candidate(c.event) and c.interaction_id != self.key]
        return keys

    def owns_top_level(self, call: CallState) -> bool:
        """Whether this call's own interaction is the thread's top-level."""
        if self.top_level_call_id is not None:
            return self.top_level_call_id == call.interaction_id
        if not is_root_candidate(call.event):
            return False
        first_root = next(c for c in self.ordered_calls() if is_root_candidate(c.event))
        return first_root.interaction_id == call.interaction_id


@dataclass(frozen=True)
class Step:
    kind: StepKind
    call_id: str

    @property
    def leg(self) -> str:
        return STEP_LEG[self.kind]


def next_step(thread: ThreadState, now: datetime) -> Step | None:
    """The next thing to do for this thread, or None when nothing can be done now."""
    for call in thread.ordered_calls():
        step = _next_for_call(thread, call, now)
        if step is not None:
            return step
    return None


def _next_for_call(thread: ThreadState, call: CallState, now: datetime) -> Step | None:
    legs = call.legs
    interaction = legs["oracle_interaction"]
    if interaction.runnable(now):
        return Step(_interaction_step(thread, call), call.interaction_id)
    if call.stopped and interaction.done:
        if legs["oracle_end"].runnable(now):
            return Step(StepKind.END_INTERACTION, call.interaction_id)
        if legs["oracle_phone_call"].runnable(now):
            return Step(StepKind.CREATE_PHONE_CALL, call.interaction_id)
    if call.stopped and legs["caliq"].runnable(now):
        return Step(StepKind.CREATE_CALIQ, call.interaction_id)
    return None


def _interaction_step(thread: ThreadState, call: CallState) -> StepKind:
    if thread.owns_top_level(call):
        if thread.top_level_id is None:
            return StepKind.CREATE_TOP_LEVEL
        return StepKind.ADOPT_TOP_LEVEL
    if thread.top_level_id is None:
        return StepKind.CREATE_PLACEHOLDER
    return StepKind.CREATE_CHILD
