"""What an operator's tooling reads from a running worker: Prometheus metrics and liveness.

Metrics: every process (the prefork children above all) writes its counters to files under
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multi-process mode; the variable must be set
before the process starts, as the Dockerfile does). The worker's main process serves them all on
`METRICS_PORT`, plus gauges read from the database at scrape time: the age of the oldest
unfinished call and the number of calls in each state.

Liveness: a worker can be alive but not consuming (its broker connection lost or wedged, which
Celery on Redis is known to survive silently). So the liveness file is touched only by proof of
consumption: a consumer bootstep, running on the consumer's event loop and only while the
consumer is connected, publishes a `callsync.heartbeat` every few seconds to a queue of this
worker's own; the heartbeat, taken off the broker and run in the pool, touches the file. While
tasks are running the step touches it too (busy is alive; a stuck task is the task time limit's
business). `callsync alive --max-age 120` turns the file's age into an exit code.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from celery import bootsteps, signals
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.celery_app import app
from worker.settings import get_base_config

log = structlog.get_logger("callsync.observability")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds between heartbeats; `callsync alive --max-age` should allow several of them.

_server: Any = None


def multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


if (_dir := multiproc_dir()) is not None:
    _dir.mkdir(parents=True, exist_ok=True)   # prometheus_client writes there on first use


# --- metrics --------------------------------------------------------------------------------


class CallsCollector(Collector):
    """Gauges computed from the database when scraped, so every worker reports the same truth."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._sessions: Any = None

    def describe(self) -> list[Any]:
        return []   # no query at registration time

    def collect(self) -> Any:
        from worker.adapters import queries

        up = GaugeMetricFamily("callsync_metrics_database_up",
                               "1 when the database answered this scrape.")
        try:
            with self._session() as session:
                oldest = queries.oldest_unfinished(session)
                states = queries.calls_by_state(session)
        except Exception as exc:   # a scrape must answer even when the database does not
            log.warning("metrics: database query failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = datetime.now(UTC).replace(tzinfo=None)
        age = GaugeMetricFamily(
            "callsync_oldest_unfinished_call_age_seconds",
            "Age of the oldest call still pending or retrying (0 when there is none).")
        age.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        yield age
        calls = GaugeMetricFamily("callsync_calls", "Calls by sync state.", labels=["state"])
        for state, count in sorted(states.items()):
            calls.add_metric([state], count)
        yield calls

    def _session(self) -> Any:
        if self._sessions is None:
            from worker.adapters.db import make_engine, make_session_factory

            self._sessions = make_session_factory(make_engine(self.database_url))
        return self._sessions()


def metrics_registry(database_url: str) -> CollectorRegistry:
    """Every process's metrics (multi-process mode) or this one's, plus the database gauges."""
    if multiproc_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    registry.register(CallsCollector(database_url))
    return registry


def serve_metrics(port: int, database_url: str, addr: str = "0.0.0.0") -> Any:
    server, _thread = start_http_server(port, addr=addr, registry=metrics_registry(database_url))
    return server


@signals.celeryd_init.connect
def _wipe_metric_files(**_: Any) -> None:
    """A new worker starts counting from zero: files of a previous run's pids would add up."""
    directory = multiproc_dir()
    if directory is None:
        return
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


@signals.worker_ready.connect
def _start_metrics_server(**_: Any) -> None:
    global _server
    config = get_base_config()
    if not config.metrics_port or _server is not None:
        return
    if multiproc_dir() is None:
        log.warning("metrics: PROMETHEUS_MULTIPROC_DIR is not set; prefork children's "
                    "metrics will not be served")
    _server = serve_metrics(config.metrics_port, config.database_url)
    log.info("metrics served", port=config.metrics_port)


@signals.worker_shutdown.connect
def _stop_metrics_server(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server = None


@signals.worker_process_shutdown.connect
def _mark_child_dead(pid: int | None = None, **_: Any) -> None:
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(pid or os.getpid())


# --- logs -----------------------------------------------------------------------------------


@signals.task_prerun.connect
def _bind_task_id(task_id: str | None = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(task_id=task_id)


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    """After Celery's own `succeeded`/`failed` line, so that line carries the call's ids too."""
    structlog.contextvars.clear_contextvars()


# --- liveness -------------------------------------------------------------------------------


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


def liveness_age(path: Path) -> float | None:
    """Seconds since the worker last proved it consumes, or None when it never did."""
    try:
        return max(0.0, datetime.now().timestamp() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


class Liveness(bootsteps.StartStopStep):
    """A consumer step: it runs only while the consumer is connected (Celery stops consumer
    steps when the connection is lost and starts them again once it is back)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        config = get_base_config()
        self.path = config.liveness_file
        self.enabled = self.path is not None
        self.interval = config.liveness_interval_seconds
        self.queue = ""
        self.tref: Any = None

    def start(self, c: Any) -> None:
        self.queue = f"callsync.alive.{c.hostname}"
        # Non-durable and auto-deleted on RabbitMQ: a dead worker leaves no queue behind.
        c.add_task_queue(self.queue, routing_key=self.queue, durable=False, auto_delete=True)
        self.tref = c.timer.call_repeatedly(self.interval, self._beat, (c,), priority=10)
        self._beat(c)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop

    def _beat(self, c: Any) -> None:
        from celery.worker import state

        assert self.path is not None
        if state.active_requests:
            touch(self.path)
        try:
            c.app.send_task("callsync.heartbeat", args=[str(self.path)], queue=self.queue,
                            expires=self.interval * 3, retry=False, ignore_result=True)
        except Exception as exc:   # the broker is away: the file ages, the probe notices
            log.warning("liveness heartbeat not sent", error=type(exc).__name__)


app.steps["consumer"].add(Liveness)
