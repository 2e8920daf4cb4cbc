"""Genesys events for tests: the same generator as the demo and the benchmark."""

from worker.domain.events import Status, merge_events
from worker.domain.plan import CallState, ThreadState
from worker.samples import T0, call_events, event, iso, stream, thread_events


def call_state(cid: str, status: Status = Status.NEW, **kw: object) -> CallState:
    """A call as the planner sees it, from one event."""
    return CallState(cid, merge_events([event(cid, status, **kw)]))


def thread_state(*calls: CallState, key: str = "root", top: int | None = None,
                 owner: str | None = None) -> ThreadState:
    thread = ThreadState(key=key, top_level_id=top, top_level_call_id=owner)
    for c in calls:
        thread.calls[c.interaction_id] = c
    return thread


__all__ = ["T0", "call_events", "call_state", "event", "iso", "stream", "thread_events",
           "thread_state"]
