"""The shared token bucket: on the real Redis (a database of its own) and on fakeredis's Lua.

The clock is passed in, so every expectation is exact arithmetic, never a timing.
"""

from __future__ import annotations

import os

import fakeredis
import pytest
import redis

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


def test_acquire_sleeps_exactly_the_reserved_wait(client) -> None:
    clock, slept = Clock(), []
    limiter = bucket(client, clock, burst=1, sleep=slept.append)
    limiter.acquire()
    limiter.acquire()
    assert slept == pytest.approx([0.1])


def test_redis_clock_is_used_when_none_is_given(client) -> None:
    limiter = RedisTokenBucket(client, "callsync:ratelimit:test", 1, burst=1)
    assert limiter.reserve() == 0
    assert 0.5 < limiter.reserve() <= 1.0   # a second's token, less the moment between calls


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
