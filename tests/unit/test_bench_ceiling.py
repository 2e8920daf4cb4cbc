"""Celery's ceiling from its rounds, before and after the events."""

from __future__ import annotations

import pytest

from worker.bench import NoopRound, ceiling
from worker.bench_cpu import GROUPS, CpuReading


def span(at: float, seconds: float, main_cpu: float) -> tuple[CpuReading, CpuReading]:
    zero = dict.fromkeys(GROUPS, 0.0)
    return (CpuReading(at, zero, 0.0),
            CpuReading(at + seconds, {**zero, "worker_main": main_cpu}, main_cpu))


def test_the_ceiling_is_every_rounds_tasks_over_every_rounds_seconds() -> None:
    before = NoopRound(1000, 2.0, span(0.0, 2.0, 1.0))
    after = NoopRound(1000, 4.0, span(50.0, 4.0, 2.0))   # the host slowed down

    found = ceiling([before, after])

    assert found is not None
    assert found["tasks_per_second"] == pytest.approx(2000 / 6.0)
    assert found["rounds"] == [500.0, 250.0]
    assert found["seconds"] == 6.0
    # The CPU of both rounds, per task of both, over their 6 s only.
    assert found["cpu"]["seconds"] == 6.0
    assert found["cpu"]["ms_per_task"]["worker_main"] == 1.5


def test_one_round_is_its_own_ceiling_and_none_is_none() -> None:
    only = ceiling([NoopRound(300, 1.5, span(0.0, 1.5, 0.3))])

    assert only is not None and only["tasks_per_second"] == 200.0 and only["rounds"] == [200.0]
    assert ceiling([]) is None
