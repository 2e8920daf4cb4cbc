"""A requests-per-second limit per CRM, shared by every worker process through Redis.

A token bucket held in one Redis hash and changed only by one Lua script, so concurrent workers
never race on it. Each call reserves a token and is told how long to wait before using it: the
balance may go negative (a queue of reservations), which keeps the request *starts* of all
workers together at or under `rate` per second after an initial burst of `burst` requests, with
one Redis round trip per request and no polling storm when many threads wait at once.

A reservation is a moment, and it is used at that moment or not at all. A process that was not
running when its moment came (stopped, swapped out, its virtual machine's CPU stolen, a thread
starved of the GIL) would otherwise send late, on top of the requests reserved for later, and
the CRM would see a burst above the limit: the benchmark measured 27 requests in one second
against 20 + 2 with the workers frozen for 300 ms every 2 s. Such a caller takes a new
reservation instead. In any second, then, at most `rate × (1 + late_tolerance) + burst`
requests start; with the defaults that is `rate + 1.1 × burst` at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from worker import metrics
from worker.settings import SettingsError

# KEYS[1] bucket hash. ARGV: rate/s, burst, max wait (s), now (s; "" = Redis's own clock).
# Returns the wait in microseconds before the reserved token may be used, or -1 when the wait
# would exceed max wait (nothing is reserved then).
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
tokens = tokens - 1
local wait = 0
if tokens < 0 then
  wait = -tokens / rate
end
if wait > max_wait then
  return -1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate + wait) + 60)
return math.floor(wait * 1000000)
"""


def default_burst(rate: float) -> float:
    """A tenth of a second's worth: no 1-second window goes more than 10% above the rate."""
    return max(1.0, rate / 10)


def default_late_tolerance(rate: float, burst: float) -> float:
    """How late a reservation may still be used: a tenth of the time the burst takes to refill,
    so lateness adds at most a tenth of the burst to any second (10 ms at 20/s with burst 2)."""
    return 0.1 * burst / rate


class RateLimitTimeout(RuntimeError):
    """The queue of reservations is longer than the caller agreed to wait."""


class RedisTokenBucket:
    """Blocks the caller until a token of the shared bucket `key` is theirs."""

    def __init__(
        self, client: redis.Redis, key: str, rate: float, *, burst: float | None = None,
        max_wait: float = 60.0, late_tolerance: float | None = None,
        clock: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        on_late: Callable[[], object] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key = key
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else default_burst(self.rate)
        self.max_wait = max_wait
        self.late_tolerance = (default_late_tolerance(self.rate, self.burst)
                               if late_tolerance is None else float(late_tolerance))
        self._clock = clock   # None: Redis's clock, the one every worker shares
        self._sleep = sleep
        self._monotonic = monotonic   # this process's own clock, for how late it woke
        self._on_late = on_late       # told each time a turn is given up as too late
        self._script = client.register_script(_SCRIPT)

    def reserve(self) -> float:
        """Take a token; the seconds to wait before it may be used (0: use it now)."""
        now = "" if self._clock is None else repr(self._clock())
        micros = int(self._script(keys=[self.key],
                                  args=[self.rate, self.burst, self.max_wait, now]))
        if micros < 0:
            raise RateLimitTimeout(
                f"rate limit {self.key}: more than {self.max_wait:.0f}s of requests queued"
            )
        return micros / 1_000_000

    def acquire(self) -> float:
        """Block until a token is ours and its moment has not passed; the seconds waited.

        A reservation counts from before its round trip to Redis, so a process stalled while the
        answer was on its way is found late too. The wait may exceed `max_wait` when the process
        keeps stalling; each reservation is still refused beyond it.
        """
        started = self._monotonic()
        asked = started
        while True:
            due = asked + self.reserve()
            now = self._monotonic()
            if due > now:
                self._sleep(due - now)
                now = self._monotonic()
            if now - due <= self.late_tolerance:
                return now - started
            # Its moment passed while this process was not running: sent now, it would land on
            # top of the requests reserved after it. That token is spent; take the next one.
            if self._on_late is not None:
                self._on_late()
            asked = now

    __call__ = acquire


def build_limiter(redis_url: str | None, crm: str, rate: float) -> RedisTokenBucket | None:
    """The limiter for one CRM, or None when its rate is 0 (no limit)."""
    if rate <= 0:
        return None
    if redis_url is None:
        raise SettingsError(
            f"{crm.upper()}_RATE_LIMIT_PER_SECOND is set but the broker is not Redis: "
            "set RATE_LIMIT_REDIS_URL"
        )
    return RedisTokenBucket(redis.Redis.from_url(redis_url), f"callsync:ratelimit:{crm}", rate,
                            on_late=metrics.RATE_LIMIT_LATE.labels(crm).inc)
