"""A requests-per-second limit per CRM, shared by every worker process through Redis.

A token bucket held in one Redis hash and changed only by one Lua script, so concurrent workers
never race on it. Each call reserves a token and is told how long to wait before using it: the
balance may go negative (a queue of reservations), which keeps the request *starts* of all
workers together at or under `rate` per second after an initial burst of `burst` requests, with
one Redis round trip per request and no polling storm when many threads wait at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

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


class RateLimitTimeout(RuntimeError):
    """The queue of reservations is longer than the caller agreed to wait."""


class RedisTokenBucket:
    """Blocks the caller until a token of the shared bucket `key` is theirs."""

    def __init__(
        self, client: redis.Redis, key: str, rate: float, *, burst: float | None = None,
        max_wait: float = 60.0, clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key = key
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else default_burst(self.rate)
        self.max_wait = max_wait
        self._clock = clock   # None: Redis's clock, the one every worker shares
        self._sleep = sleep
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
        """Block until a token is ours; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

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
    return RedisTokenBucket(redis.Redis.from_url(redis_url), f"callsync:ratelimit:{crm}", rate)
