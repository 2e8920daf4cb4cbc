"""Fault plan shared by both simulators: which requests fail, how, and how many times.

Pure matching and consumption logic (no HTTP) so it can be unit-tested directly; the
HTTP layer in ``worker.sandbox.base`` decides what each action means on the wire.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

STATUS_ACTIONS = frozenset({"400", "401", "403", "404", "429", "500", "502", "503"})
OTHER_ACTIONS = frozenset({"timeout", "drop", "drop_after_apply"})
ACTIONS = STATUS_ACTIONS | OTHER_ACTIONS
DEFAULT_TIMEOUT_DELAY = 30.0
DEFAULT_RETRY_AFTER = 1


@dataclass
class FaultRule:
    """One rule. ``times`` = 0 means it fires on every matching request."""

    action: str
    method: str | None = None
    path: str = ""
    times: int = 1
    retry_after: float | None = None
    delay: float | None = None
    fired: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.action = str(self.action)
        if self.action not in ACTIONS:
            raise ValueError(
                f"unknown fault action {self.action!r}; expected one of {sorted(ACTIONS)}"
            )
        if self.times < 0:
            raise ValueError("times must be >= 0")
        self.method = self.method.upper() if self.method and self.method != "*" else None
        try:
            self._pattern = re.compile(self.path)
        except re.error as exc:
            raise ValueError(f"bad path regex {self.path!r}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict) or "action" not in data:
            raise ValueError(f"a fault rule needs an 'action': {data!r}")
        unknown = set(data) - {"action", "method", "path", "times", "retry_after", "delay"}
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        return cls(
            action=str(data["action"]),
            method=data.get("method"),
            path=str(data.get("path") or ""),
            times=int(data.get("times", 1)),
            retry_after=_opt_float(data.get("retry_after")),
            delay=_opt_float(data.get("delay")),
        )

    @property
    def exhausted(self) -> bool:
        return self.times != 0 and self.fired >= self.times

    def matches(self, method: str, path: str) -> bool:
        """Path is matched with re.search against the path without its query string."""
        if self.exhausted:
            return False
        if self.method is not None and self.method != method.upper():
            return False
        return self._pattern.search(path) is not None

    @property
    def status(self) -> int:
        """HTTP status this rule answers with (timeouts end in 503; drops answer nothing)."""
        return int(self.action) if self.action in STATUS_ACTIONS else 503

    @property
    def timeout_delay(self) -> float:
        return DEFAULT_TIMEOUT_DELAY if self.delay is None else self.delay

    @property
    def retry_after_header(self) -> str:
        value = DEFAULT_RETRY_AFTER if self.retry_after is None else self.retry_after
        return str(int(value)) if float(value).is_integer() else str(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "fired": self.fired,
            "exhausted": self.exhausted,
        }


class FaultPlan:
    """Ordered rules; the first matching rule with times left fires and is consumed."""

    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        if rules:
            self.replace(rules)

    def replace(self, rules: list[dict[str, Any]]) -> None:
        # Parse everything before swapping so a bad rule leaves the old plan intact.
        parsed = [FaultRule.from_dict(rule) for rule in rules]
        with self._lock:
            self._rules = parsed

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def take(self, method: str, path: str) -> FaultRule | None:
        """Return the rule that fires for this request (consuming one use), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.fired += 1
                    return rule
        return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
