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


def test_rounds_more_than_thirty_percent_apart_are_not_steady() -> None:
    def rounds(*rates: float) -> list[NoopRound]:
        return [NoopRound(int(rate * 2), 2.0, span(n * 50.0, 2.0, 1.0))
                for n, rate in enumerate(rates)]

    for before, after, steady in ((800, 700, True), (700, 910, True), (807, 496, False),
                                  (324, 668, False)):
        found = ceiling(rounds(before, after))
        assert found is not None and found["steady"] is steady, (before, after)


def test_the_readable_ratio_warns_of_an_unsteady_ceiling() -> None:
    from worker.commands.bench import _ratio

    steady = {"ratio_to_noop": 0.31, "noop_rounds_steady": True,
              "ratio_to_fastest_noop_round": 0.30}
    assert _ratio(steady) == "0.31"
    unsteady = {**steady, "ratio_to_noop": 0.357, "noop_rounds_steady": False,
                "ratio_to_fastest_noop_round": 0.272}
    assert _ratio(unsteady) == ("0.357 (the ceiling's rounds are more than 30% apart: "
                                "against the faster one, 0.272)")
