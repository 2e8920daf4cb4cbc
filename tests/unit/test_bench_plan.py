"""What the benchmark publishes: exactly N calls, every event, in a minimum-setting order."""

from __future__ import annotations

from collections import Counter

import pytest

from worker.bench_plan import plan_events
from worker.domain.events import Status


@pytest.mark.parametrize("calls", [1, 2, 7, 100])
def test_exactly_n_calls_each_with_its_three_events(calls: int) -> None:
    plan = plan_events(calls, "p")
    assert plan.calls == calls
    per_call = Counter(e["interaction_id"] for e in plan.events)
    assert set(per_call.values()) == {3}
    assert {e["thread_id"] for e in plan.events} == set(plan.threads.values())


def test_interleaved_publishes_each_stage_of_a_block_before_the_next() -> None:
    plan = plan_events(30, "p", block=5)
    block = set(sorted(set(plan.threads.values()))[:5])
    stages = [e["status"] for e in plan.events if e["thread_id"] in block]
    assert stages == sorted(stages)                     # all NEW, then IN_PROCESS, then STOPPED
    assert len(stages) == len(plan.events[: len(stages)])
    assert {e["thread_id"] for e in plan.events[: len(stages)]} == block   # blocks do not mix
    first = plan.events[0]
    assert first["interaction_id"] == first["thread_id"]   # a thread's root call leads


def test_stopped_first_puts_each_calls_stop_before_its_start() -> None:
    plan = plan_events(10, "p", order="stopped-first")
    seen: dict[str, int] = {}
    for event in plan.events:
        seen.setdefault(event["interaction_id"], event["status"])
    assert set(seen.values()) == {int(Status.STOPPED)}


def test_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_events(3, "p", order="random")
