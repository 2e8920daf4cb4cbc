"""What the benchmark publishes: N calls as realistic threads, in a realistic order.

Threads come from worker.samples (a root call and 0-2 consults, each NEW, IN_PROCESS, STOPPED
with a transcript). Many calls are in progress at once in a contact centre, so events are
published in blocks of threads: every NEW of the block, then every IN_PROCESS, then every
STOPPED. A call's events are then far apart in the queue and reach callsync separately (its
minimum is 4 requests). `stopped-first` publishes STOPPED before the other two (minimum 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.domain.events import Status
from worker.samples import thread_events

ORDERS = ("interleaved", "stopped-first")
_STAGE = {int(Status.NEW): 0, int(Status.IN_PROCESS): 1, int(Status.STOPPED): 2}


@dataclass(frozen=True)
class Plan:
    events: list[dict[str, Any]]
    threads: dict[str, str]  # call id -> thread key

    @property
    def calls(self) -> int:
        return len(self.threads)


def plan_events(calls: int, prefix: str, *, order: str = "interleaved",
                block: int = 50) -> Plan:
    """Events of exactly `calls` calls in threads of 1-3 calls, in publishing order."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    threads: list[list[dict[str, Any]]] = []
    made = n = 0
    while made < calls:
        consults = min(n % 3, calls - made - 1)
        threads.append(thread_events(f"{prefix}-{n:06d}", consults=consults))
        made += consults + 1
        n += 1
    events: list[dict[str, Any]] = []
    for start in range(0, len(threads), block):
        chunk = [e for thread in threads[start:start + block] for e in thread]
        if order == "interleaved":
            chunk.sort(key=lambda e: _STAGE[e["status"]])   # stable: thread order kept
        else:
            chunk.sort(key=lambda e: (e["interaction_id"], -_STAGE[e["status"]]))
        events += chunk
    mapping = {e["interaction_id"]: e["thread_id"] for e in events}
    return Plan(events, mapping)
