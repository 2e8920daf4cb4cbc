"""Prometheus metrics. Defined once here; prefork-safe through prometheus_client's multi-process
mode when PROMETHEUS_MULTIPROC_DIR is set (see worker.observability for serving them)."""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "callsync_events_received_total", "Events received, by journal outcome.", ["outcome"]
)
STEPS = Counter(
    "callsync_steps_total", "Steps attempted, by leg and result.", ["leg", "result"]
)
REQUESTS = Counter(
    "callsync_crm_requests_total", "Requests made to a CRM.", ["crm", "endpoint", "status"]
)
LATENCY = Histogram(
    "callsync_crm_request_seconds", "CRM request latency.", ["crm", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("callsync_retries_total", "Transient failures that were scheduled again.",
                  ["leg"])
FAILURES = Counter("callsync_failures_total", "Legs that failed for good or were parked.",
                   ["leg", "kind"])

RATE_LIMIT_LATE = Counter(
    "callsync_rate_limit_late_total",
    "Rate-limit turns given up because the process woke after its moment (a stall).", ["crm"],
)

_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def endpoint(method: str, path: str) -> str:
    """`POST interactions/300100/child/childInteractions` -> `POST interactions/{id}/child/...`"""
    return f"{method} {_ID_SEGMENT.sub('/{id}', '/' + path.split('?')[0]).lstrip('/')}"


def observe_request(crm: str, method: str, path: str, status: int | None, seconds: float) -> None:
    name = endpoint(method, path)
    REQUESTS.labels(crm, name, str(status) if status is not None else "none").inc()
    LATENCY.labels(crm, name).observe(seconds)
