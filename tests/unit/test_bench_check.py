"""The benchmark's judgements: completeness, requests against their minimum, rates, latency."""

from __future__ import annotations

import copy
from datetime import datetime

import pytest

from worker.bench_check import (
    applied_latencies,
    completeness_problems,
    minimum_requests,
    percentile,
    rate_stats,
    request_counts,
)

THREADS = {"t1": "t1", "t1-c1": "t1", "t2": "t2"}
MESSAGES = dict.fromkeys(THREADS, 8)


def good_state() -> tuple[dict, dict]:
    interactions = [
        {"InteractionId": 1, "ParentInteractionId": 1, "MediaItemId": "t1", "EndTime": "x"},
        {"InteractionId": 2, "ParentInteractionId": 1, "MediaItemId": "t1-c1", "EndTime": "x"},
        {"InteractionId": 3, "ParentInteractionId": 3, "MediaItemId": "t2", "EndTime": "x"},
    ]
    calls = [{"CallId": 10 + i["InteractionId"], "InteractionId": i["InteractionId"],
              "ExternalSystemCallId": i["MediaItemId"], "TranscriptMessage": [{}] * 8}
             for i in interactions]
    caliq = {"interactions": [{"UniqueID": c} for c in THREADS]}
    return {"interactions": interactions, "phoneCalls": calls}, caliq


def test_a_complete_result_has_no_problem() -> None:
    oracle, caliq = good_state()
    assert completeness_problems(oracle, caliq, THREADS, MESSAGES) == []


@pytest.mark.parametrize("collection", ["interactions", "phoneCalls"])
def test_a_duplicate_oracle_record_is_reported(collection: str) -> None:
    oracle, caliq = good_state()
    extra = copy.deepcopy(oracle[collection][1])
    oracle[collection].append(extra)
    problems = completeness_problems(oracle, caliq, THREADS, MESSAGES)
    assert any("t1-c1" in p and "duplicate" in p for p in problems), problems


def test_a_duplicate_or_missing_caliq_interaction_is_reported() -> None:
    oracle, caliq = good_state()
    caliq["interactions"] = [{"UniqueID": "t1"}, {"UniqueID": "t1"}, {"UniqueID": "t2"}]
    problems = completeness_problems(oracle, caliq, THREADS, MESSAGES)
    assert any("UniqueID=t1: 2 records" in p for p in problems)
    assert any("1 calls without a Caliq interaction" in p for p in problems)


def test_wrong_parent_open_interaction_short_transcript_and_strangers_are_reported() -> None:
    oracle, caliq = good_state()
    oracle["interactions"][1]["ParentInteractionId"] = 3
    oracle["interactions"][2]["EndTime"] = None
    oracle["phoneCalls"][0]["TranscriptMessage"] = [{}] * 7
    oracle["interactions"].append({"InteractionId": 9, "ParentInteractionId": 9,
                                   "MediaItemId": "someone-else", "EndTime": "x"})
    problems = completeness_problems(oracle, caliq, THREADS, MESSAGES)
    assert "t1-c1: not under its thread's top-level interaction" in problems
    assert "t2: interaction not ended" in problems
    assert "t1: transcript has 7 of 8 messages" in problems
    assert any("someone-else: not a call of this run" in p for p in problems)


def test_request_counts_see_gets_and_failed_answers() -> None:
    logs = {"oracle": [{"method": "POST", "status": 201}, {"method": "GET", "status": 200},
                       {"method": "PATCH", "status": None}],
            "caliq": [{"method": "POST", "status": 200}]}
    counts = request_counts(logs)
    assert counts["total"] == 4
    assert counts["gets"] == 1
    assert counts["errors"] == 1
    assert counts["by_method"]["oracle POST"] == 1


def test_minimum_is_four_per_call_three_when_created_ended_plus_placeholders() -> None:
    rows = [
        ("a", "oracle_interaction", "POST"), ("a", "oracle_end", "PATCH"),
        ("a", "oracle_phone_call", "POST"), ("a", "caliq", "POST"),
        ("b", "oracle_end,oracle_interaction", "POST"), ("b", "oracle_phone_call", "POST"),
        ("b", "caliq", "POST"),
        # c's consult came first: a placeholder, then the root's data PATCHed onto it.
        ("c-c1", "oracle_interaction", "POST"), ("c", "oracle_end,oracle_interaction", "PATCH"),
    ]
    got = minimum_requests(rows, calls=3)
    assert got == {"minimum": 4 * 3 - 2 + 1, "stopped_first_calls": 2, "separate_calls": 1,
                   "placeholder_threads": 1}


def test_rate_stats_find_the_busiest_second() -> None:
    at = ["2026-01-01T00:00:00.000+00:00", "2026-01-01T00:00:00.500+00:00",
          "2026-01-01T00:00:00.900+00:00", "2026-01-01T00:00:02.000+00:00"]
    stats = rate_stats([{"at": a} for a in at])
    assert stats["requests"] == 4
    assert stats["max_in_1s"] == 3
    assert stats["average_per_second"] == 1.5


def test_an_event_is_applied_when_journaled_and_its_legs_are_done() -> None:
    sent = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()   # DB: naive UTC
    received = {("a", 0): datetime(2026, 1, 1, 0, 0, 1), ("a", 3): datetime(2026, 1, 1, 0, 0, 2)}
    legs = {("a", "oracle_interaction"): datetime(2026, 1, 1, 0, 0, 3),
            ("a", "oracle_end"): datetime(2026, 1, 1, 0, 0, 5),
            ("a", "oracle_phone_call"): datetime(2026, 1, 1, 0, 0, 6),
            ("a", "caliq"): datetime(2026, 1, 1, 0, 0, 4)}
    latencies = applied_latencies({("a", 0): sent, ("a", 3): sent + 1}, received, legs)
    assert latencies == [3.0, 5.0]   # NEW: its interaction; STOPPED: the last of four legs


def test_percentile_is_a_value_that_happened() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([2.0], 0.99) == 2.0
    assert percentile([], 0.5) == 0.0


def test_verify_refuses_to_report_when_the_simulator_holds_a_duplicate() -> None:
    """Through the real simulators: the same call's interaction created twice is caught."""
    from worker.adapters.oracle import OracleClient
    from worker.bench import verify
    from worker.bench_env import BenchError
    from worker.bench_plan import plan_events
    from worker.sandbox.server import Simulators

    plan = plan_events(1, "dup")
    (call_id,) = plan.threads
    with Simulators() as sims:
        oracle = OracleClient(f"{sims.oracle_url}/crmRestApi/resources/11.13.18.05",
                              username="sandbox", password="sandbox-password")
        for _ in range(2):
            oracle.create_interaction({"MediaItemId": call_id})
        with pytest.raises(BenchError, match=f"MediaItemId={call_id}: 2 records"):
            verify(None, plan, sims)  # type: ignore[arg-type]  # refused before any query
