"""`callsync bench` end to end, tiny: real simulators, a real worker, the real broker.

Asserts what the report promises (its fields, a complete result at the minimum of requests),
never how fast anything was.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner

from worker.bench_env import _CLAIM_AND_FLUSH, CLAIM_KEY, claim_broker
from worker.cli import cli
from worker.commands.bench import result_table

pytestmark = pytest.mark.redis

# A Redis database of the benchmark test's own: the bench flushes it, and refuses it when another
# client is connected to it.
BENCH_REDIS_URL = os.environ.get("CALLSYNC_TEST_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
FIELDS = ("calls_per_second", "events_per_second", "noop_tasks_per_second", "ratio_to_noop",
          "requests_per_call", "p50_seconds", "p99_seconds", "peak_rss_mb", "settings")


@pytest.fixture
def bench_broker() -> str:
    try:
        redis.Redis.from_url(BENCH_REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {BENCH_REDIS_URL}")
    return BENCH_REDIS_URL


def test_a_tiny_bench_reports_every_field_of_a_complete_run(bench_broker: str) -> None:
    result = CliRunner().invoke(cli, [
        "bench", "--calls", "20", "--concurrency", "2", "--broker-url", bench_broker,
        "--json", "--oracle-rate-limit", "500", "--prefetch-multiplier", "2",
        "--stall-ms", "100",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for field in FIELDS:
        assert report[field] is not None, field
    assert report["complete"] is True
    assert report["calls"] == 20 and report["events"] == 60
    # Each request was needed: none repeated, no look-up.
    assert report["excess_requests"] == 0
    assert report["get_requests"] == 0
    assert 3 <= report["requests_per_call"] <= 4.5
    assert report["ratio_to_noop"] == pytest.approx(
        report["events_per_second"] / report["noop_tasks_per_second"], rel=0.01)
    # The ceiling is measured before the events and after them, and is both rounds together.
    before, after = report["noop_rounds_tasks_per_second"]
    assert min(before, after) <= report["noop_tasks_per_second"] <= max(before, after)
    assert report["noop_drift_pct"] == pytest.approx((after / before - 1) * 100, abs=0.2)
    assert report["noop_rounds_steady"] is (max(before, after) <= min(before, after) * 1.3)
    assert report["ratio_to_fastest_noop_round"] == pytest.approx(
        report["events_per_second"] / max(before, after), rel=0.01)
    assert report["settings"]["pool"] == "prefork"
    assert report["settings"]["prefetch_multiplier"] == 2
    assert report["settings"]["database"] == "sqlite"
    assert report["rates"]["oracle"]["limit_per_second"] == 500
    # The workers were frozen at least once (the first stall comes at once), and the run is
    # still complete.
    assert report["settings"]["stall_ms"] == 100
    assert report["stalls"]["count"] >= 1
    # Each stall lasts its 100 ms but the last, which the end of the run may cut short.
    count = report["stalls"]["count"]
    assert 0.1 * (count - 1) <= report["stalls"]["frozen_seconds"] <= 0.1 * count + 0.05
    assert report["p50_seconds"] <= report["p99_seconds"]
    # Where the CPU went: the parts add up to the machine's busy time, and the events' work
    # was done in the prefork children, handed over by Celery's main process. (A no-op phase
    # this short is below the 10 ms resolution of a process's CPU counters.)
    for phase, per in (("noop", "task"), ("events", "event")):
        ms = report["cpu"][phase][f"ms_per_{per}"]
        assert ms["all"] == pytest.approx(sum(v for k, v in ms.items() if k != "all"), abs=0.01)
        assert ms["all"] > 0 and report["cpu"][phase]["cores_busy"] > 0, (phase, ms)
        # The hypervisor's steal time, in cores: none or little, and never busy time.
        assert 0 <= report["cpu"][phase]["cores_stolen"] < 2, report["cpu"][phase]
    events = report["cpu"]["events"]["ms_per_event"]
    assert events["worker_pool"] > 0 and events["worker_main"] > 0, events
    # The readable form of the same report names the figures.
    console = Console(record=True, width=200)
    console.print(result_table(report))
    text = console.export_text()
    assert f"{report['ratio_to_noop']}" in text
    assert f"before the events {before:g}, after {after:g}" in text
    assert f"pool {events['worker_pool']:.2f}" in text and "CPU per no-op task (ms)" in text
    assert f"({report['cpu']['events']['cores_stolen']} stolen)" in text
    assert f"{report['stalls']['count']} times" in text
    # The run closed every connection it opened on the database it claimed, and released it.
    client = redis.Redis.from_url(bench_broker)
    try:
        me = client.client_id()
        db = int(bench_broker.rsplit("/", 1)[1])
        assert [c for c in client.client_list() if int(c["db"]) == db and int(c["id"]) != me] == []
        assert client.exists(CLAIM_KEY) == 0
    finally:
        client.close()


def test_a_broker_database_in_use_is_refused_before_anything_is_flushed(bench_broker: str
                                                                         ) -> None:
    other = redis.Redis.from_url(bench_broker)
    other.set("someone-elses-key", "1")
    try:
        result = CliRunner().invoke(cli, ["bench", "--calls", "1", "--broker-url", bench_broker])
        assert result.exit_code == 1
        assert "in use" in result.output
        assert other.get("someone-elses-key") == b"1"
    finally:
        other.delete("someone-elses-key")
        other.close()


def test_a_broker_database_claimed_by_another_run_is_refused_and_left_alone(bench_broker: str
                                                                            ) -> None:
    # The race a client check alone misses: the first run has claimed and flushed the database
    # but none of its connections is open at the moment the second run looks.
    with claim_broker(bench_broker):
        client = redis.Redis.from_url(bench_broker)
        client.set("first-runs-message", "1")
        try:
            result = CliRunner().invoke(cli, ["bench", "--calls", "1",
                                              "--broker-url", bench_broker])
            assert result.exit_code == 1
            assert "another benchmark run" in result.output
            assert client.get("first-runs-message") == b"1"
        finally:
            client.close()
    # Released at the end of the run: the next one may claim it.
    with claim_broker(bench_broker):
        assert redis.Redis.from_url(bench_broker).get("first-runs-message") is None


def test_of_two_runs_claiming_one_broker_database_at_once_exactly_one_wins(bench_broker: str
                                                                           ) -> None:
    # Both have passed the client check; the claim itself must still let only one through.
    tokens = ["a", "b"]
    client = redis.Redis.from_url(bench_broker)
    try:
        won = [client.eval(_CLAIM_AND_FLUSH, 1, CLAIM_KEY, t, 5000) for t in tokens]
        assert won == [1, 0]
        assert client.get(CLAIM_KEY) == b"a"
    finally:
        client.delete(CLAIM_KEY)
        client.close()


def test_the_ceiling_after_the_events_waits_for_an_empty_broker_and_gives_up_on_a_stuck_one(
        bench_broker: str) -> None:
    # The second no-op round starts only once the events' last messages are gone: a message
    # still queued (or unacknowledged) holds it back, and one that never leaves fails the run
    # with a reason instead of timing no-ops behind it.
    from worker.bench import BrokerWatch
    from worker.bench_env import BenchError
    from worker.celery_app import QUEUE

    watch = BrokerWatch(bench_broker)
    client = watch.client
    try:
        client.rpush(QUEUE, "a message of the events")
        with pytest.raises(BenchError, match="still holds messages"):
            watch.wait_empty(timeout=0.3)
        client.delete(QUEUE)
        client.hset("unacked", "tag", "an unacknowledged message")
        timer = threading.Timer(0.3, client.hdel, ("unacked", "tag"))
        timer.start()
        started = time.monotonic()
        watch.wait_empty(timeout=5)
        assert time.monotonic() - started >= 0.25   # it waited for the acknowledgement
        timer.join()
    finally:
        client.delete(QUEUE, "unacked")
        client.close()
