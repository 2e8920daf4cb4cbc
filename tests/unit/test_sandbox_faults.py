"""Fault-plan matching and consumption, without HTTP."""

from __future__ import annotations

import pytest

from worker.sandbox.faults import FaultPlan, FaultRule


def test_rule_fires_once_by_default_then_stops_matching() -> None:
    plan = FaultPlan([{"method": "POST", "path": "/phoneCalls$", "action": "503"}])
    first = plan.take("POST", "/crmRestApi/resources/11.13.18.05/phoneCalls")
    assert first is not None and first.status == 503
    assert plan.take("POST", "/crmRestApi/resources/11.13.18.05/phoneCalls") is None
    assert plan.describe()[0]["exhausted"] is True


def test_times_counts_uses_and_zero_means_always() -> None:
    plan = FaultPlan([{"path": "x", "action": "500", "times": 2}])
    assert [plan.take("GET", "/x") is not None for _ in range(3)] == [True, True, False]
    always = FaultPlan([{"path": "x", "action": "500", "times": 0}])
    assert all(always.take("GET", "/x") is not None for _ in range(50))


def test_method_and_path_must_both_match() -> None:
    plan = FaultPlan([{"method": "post", "path": r"/interactions/\d+$", "action": "404"}])
    assert plan.take("GET", "/r/interactions/5") is None
    assert plan.take("POST", "/r/interactions") is None
    assert plan.take("POST", "/r/interactions/5/child/childInteractions") is None
    rule = plan.take("POST", "/r/interactions/5")
    assert rule is not None and rule.action == "404"


def test_missing_method_or_star_matches_any_method() -> None:
    plan = FaultPlan(
        [
            {"path": "a", "action": "502", "times": 0},
            {"method": "*", "path": "b", "action": "500", "times": 0},
        ]
    )
    assert plan.take("PATCH", "/a").action == "502"  # type: ignore[union-attr]
    assert plan.take("DELETE", "/b").action == "500"  # type: ignore[union-attr]


def test_rules_checked_in_order_and_exhausted_rule_falls_through() -> None:
    plan = FaultPlan(
        [
            {"path": "calls", "action": "429", "retry_after": 7},
            {"path": "calls", "action": "drop_after_apply"},
            {"path": "", "action": "timeout", "delay": 0.5},
        ]
    )
    actions = [plan.take("POST", "/calls").action for _ in range(3)]  # type: ignore[union-attr]
    assert actions == ["429", "drop_after_apply", "timeout"]
    assert plan.take("POST", "/calls") is None


def test_retry_after_header_and_timeout_defaults() -> None:
    assert FaultRule(action="429", retry_after=7).retry_after_header == "7"
    assert FaultRule(action="503", retry_after=0.5).retry_after_header == "0.5"
    assert FaultRule(action="503").retry_after_header == "1"
    assert FaultRule(action="timeout").timeout_delay == 30.0
    assert FaultRule(action="timeout", delay=0.2).timeout_delay == 0.2
    assert FaultRule(action="timeout").status == 503


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "418"},
        {"path": "x"},
        {"action": "503", "path": "("},
        {"action": "503", "times": -1},
        {"action": "503", "colour": "red"},
    ],
)
def test_invalid_rules_rejected(rule: dict) -> None:
    with pytest.raises(ValueError):
        FaultRule.from_dict(rule)


def test_bad_replacement_keeps_previous_plan() -> None:
    plan = FaultPlan([{"path": "x", "action": "500"}])
    with pytest.raises(ValueError):
        plan.replace([{"path": "y", "action": "400"}, {"action": "nope"}])
    assert [r["path"] for r in plan.describe()] == ["x"]
    plan.clear()
    assert plan.take("GET", "/x") is None
