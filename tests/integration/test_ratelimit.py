"""The shared token bucket: on the real Redis (a database of its own) and on fakeredis's Lua.

The clock is passed in, so every expectation is exact arithmetic, never a timing.
"""

from __future__ import annotations

import bisect
import os
import threading
import time

import fakeredis
import pytest
import redis
from prometheus_client import REGISTRY

from worker.adapters.http import ErrorKind, JsonHttp, RemoteError
from worker.adapters.ratelimit import RateLimitTimeout, RedisTokenBucket, build_limiter
from worker.settings import SettingsError

RATELIMIT_REDIS_URL = os.environ.get("CALLSYNC_TEST_RATELIMIT_REDIS_URL",
                                     "redis://127.0.0.1:6379/11")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "fakeredis":
        pytest.importorskip("lupa")  # fakeredis runs Lua only with lupa installed
        yield fakeredis.FakeRedis()
        return
    real = redis.Redis.from_url(RATELIMIT_REDIS_URL)
    try:
        real.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at " + RATELIMIT_REDIS_URL)
    key_prefix = "callsync:ratelimit:test"
    for key in real.scan_iter(f"{key_prefix}*"):
        real.delete(key)
    yield real
    for key in real.scan_iter(f"{key_prefix}*"):
        real.delete(key)
    real.close()


def bucket(client, clock: Clock, rate: float = 10, burst: float = 2, **kw):  # type: ignore[no-untyped-def]
    return RedisTokenBucket(client, "callsync:ratelimit:test", rate, burst=burst, clock=clock,
                            **kw)


def test_a_burst_goes_at_once_then_requests_are_spaced_at_the_rate(client) -> None:
    clock = Clock()
    limiter = bucket(client, clock)
    waits = [limiter.reserve() for _ in range(5)]
    # Two tokens in the bucket, then one reservation every 1/10 s behind them.
    assert waits == pytest.approx([0, 0, 0.1, 0.2, 0.3])


def test_tokens_come_back_with_time_but_never_above_the_burst(client) -> None:
    clock = Clock()
    limiter = bucket(client, clock)
    for _ in range(2):
        limiter.reserve()
    clock.now += 0.1
    assert limiter.reserve() == 0                       # one token refilled
    assert limiter.reserve() == pytest.approx(0.1)
    clock.now += 60                                     # a long quiet spell: only `burst` back
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_workers_sharing_the_key_share_the_budget(client) -> None:
    clock = Clock()
    one, two = bucket(client, clock), bucket(client, clock)
    waits = [one.reserve(), two.reserve(), one.reserve(), two.reserve()]
    assert waits == pytest.approx([0, 0, 0.1, 0.2])
    other_crm = RedisTokenBucket(client, "callsync:ratelimit:test-other", 10, burst=2,
                                 clock=clock)
    assert other_crm.reserve() == 0                     # each CRM has its own bucket


def test_a_queue_longer_than_max_wait_is_refused_without_reserving(client) -> None:
    clock = Clock()
    limiter = bucket(client, clock, rate=1, burst=1, max_wait=2)
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0, 1, 2])
    with pytest.raises(RateLimitTimeout):
        limiter.reserve()
    clock.now += 1
    assert limiter.reserve() == pytest.approx(2)        # the refused call took no slot


class ProcessClock(Clock):
    """This process's clock for one caller: sleeping moves it, and a stall adds to one sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []
        self.stall_next_sleep = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds + self.stall_next_sleep
        self.stall_next_sleep = 0.0


def test_acquire_sleeps_exactly_the_reserved_wait(client) -> None:
    clock = ProcessClock()
    limiter = bucket(client, clock, burst=1, sleep=clock.sleep, monotonic=clock)
    assert limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(0.1)
    assert clock.slept == pytest.approx([0.1])


def test_a_caller_that_wakes_after_its_moment_takes_a_new_turn(client) -> None:
    clock, late = ProcessClock(), []
    limiter = bucket(client, clock, burst=1, sleep=clock.sleep, monotonic=clock,
                     on_late=lambda: late.append(clock.now))
    limiter.acquire()
    clock.stall_next_sleep = 0.3           # frozen while waiting for the turn due at +0.1
    waited = limiter.acquire()
    # Woken at +0.4, three turns too late: that turn is given up, and the next free one is
    # now (the bucket refilled while the process was frozen), so the request goes at +0.4.
    assert late == pytest.approx([clock.now])
    assert waited == pytest.approx(0.4)
    assert limiter.reserve() == pytest.approx(0.1)   # and the turn after it is still spaced


def test_lateness_within_the_tolerance_keeps_the_turn(client) -> None:
    clock, late = ProcessClock(), []
    limiter = bucket(client, clock, burst=2, sleep=clock.sleep, monotonic=clock,
                     on_late=lambda: late.append(1))
    assert limiter.late_tolerance == pytest.approx(0.02)   # a tenth of 2 tokens at 10/s
    limiter.acquire()
    limiter.acquire()
    clock.stall_next_sleep = 0.015
    assert limiter.acquire() == pytest.approx(0.115)
    assert late == []


class StallingProcess(Clock):
    """One clock for many threads. Time moves only when every thread sleeps, to the earliest
    wake-up; a wake-up that falls in a stall (the process frozen) happens when the stall ends,
    as it does for a stopped process or a virtual machine whose CPU was taken away."""

    def __init__(self, threads: int, stalls: list[tuple[float, float]]) -> None:
        super().__init__()
        self.stalls = [(self.now + a, self.now + b) for a, b in stalls]
        self.running = threads
        self.asleep: dict[object, float] = {}
        self.changed = threading.Condition()

    def sleep(self, seconds: float) -> None:
        with self.changed:
            wake = self.now + seconds
            wake = next((end for start, end in self.stalls if start < wake < end), wake)
            me = object()
            self.asleep[me] = wake
            self._advance_when_all_asleep()
            while me in self.asleep:
                self.changed.wait()

    def exit(self) -> None:
        with self.changed:
            self.running -= 1
            self._advance_when_all_asleep()

    def _advance_when_all_asleep(self) -> None:
        if self.asleep and len(self.asleep) == self.running:
            self.now = min(self.asleep.values())
            for sleeper in [s for s, wake in self.asleep.items() if wake == self.now]:
                del self.asleep[sleeper]
            self.changed.notify_all()


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def sends_under_stalls(client, **kw) -> list[float]:  # type: ignore[no-untyped-def]
    """16 threads, each: wait for a turn, send (50 ms), again; 300 sends at 20/s with burst 2,
    the process frozen for 300 ms every 2 s, as the benchmark's workers were by SIGSTOP."""
    threads, total = 16, 300
    process = StallingProcess(threads, [(2.0 * k + 0.7, 2.0 * k + 1.0) for k in range(20)])
    limiter = RedisTokenBucket(client, "callsync:ratelimit:test", 20, burst=2, clock=process,
                               monotonic=process, sleep=process.sleep, **kw)
    sent: list[float] = []
    guard = threading.Lock()

    def caller() -> None:
        try:
            while True:
                limiter.acquire()
                with guard:
                    if len(sent) >= total:
                        return
                    sent.append(process.now)
                process.sleep(0.05)
        finally:
            process.exit()

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    return sent


def test_stalled_callers_keep_every_second_within_the_promise(client) -> None:
    late: list[int] = []
    sent = sends_under_stalls(client, on_late=lambda: late.append(1))
    assert len(sent) == 300
    # rate x (1 + tolerance) + burst = 20 x 1.01 + 2: 22 requests in any second at most.
    assert busiest_second(sent) <= 22
    assert late, "the stalls made some callers late"
    assert (len(sent) - 1) / (sent[-1] - sent[0]) <= 20


def test_without_the_lateness_check_the_same_stalls_break_the_limit(client) -> None:
    # The scenario is a real one: callers that use a turn however late put bursts on the CRM.
    sent = sends_under_stalls(client, late_tolerance=float("inf"))
    assert busiest_second(sent) > 22


def test_redis_clock_is_used_when_none_is_given(client) -> None:
    limiter = RedisTokenBucket(client, "callsync:ratelimit:test", 1, burst=1)
    assert limiter.reserve() == 0
    assert 0.5 < limiter.reserve() <= 1.0   # a second's token, less the moment between calls


def test_a_turn_given_up_is_counted_in_the_late_metric() -> None:
    real = redis.Redis.from_url(RATELIMIT_REDIS_URL)
    real.delete("callsync:ratelimit:test-late")
    limiter = build_limiter(RATELIMIT_REDIS_URL, "test-late", 20)   # burst 2, 10 ms tolerance
    assert limiter is not None
    # Each wait overslept by 100 ms, as if the process had been stopped for that long.
    limiter._sleep = lambda seconds: time.sleep(seconds + 0.1)

    def late() -> float:
        return REGISTRY.get_sample_value("callsync_rate_limit_late_total", {"crm": "test-late"}
                                         ) or 0.0

    before = late()
    assert limiter() < 0.01 and limiter() < 0.01   # the burst: no wait, never late
    assert late() == before
    assert limiter() >= 0.1                     # up to 50 ms reserved, woke 100 ms after it
    assert late() == before + 1                 # that turn given up, the next one taken
    real.delete("callsync:ratelimit:test-late")
    real.close()


def test_no_limit_builds_no_limiter_and_a_limit_needs_redis() -> None:
    assert build_limiter("redis://127.0.0.1:6379/11", "oracle", 0) is None
    with pytest.raises(SettingsError, match="RATE_LIMIT_REDIS_URL"):
        build_limiter(None, "oracle", 5)


def test_an_unavailable_limiter_is_a_transient_error_and_nothing_is_sent() -> None:
    def broken() -> None:
        raise redis.ConnectionError("down")

    http = JsonHttp("oracle", "http://127.0.0.1:9", timeout=(1, 1), limiter=broken)
    with pytest.raises(RemoteError) as caught:
        http.request("POST", "interactions", json_body={})
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert not caught.value.maybe_applied
    assert "rate limit unavailable" in str(caught.value)
