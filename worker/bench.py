"""`callsync bench`: throughput against Celery's own ceiling, requests per call, latency, memory.

One run, one isolated world (worker.bench_env): the simulators, real `celery worker` processes on
the real broker, and a fresh database. Celery's ceiling: as many `callsync.noop` tasks as the run
has events, through the same broker, pool and concurrency, before the calls and again after them.
In between, N calls as realistic threads (worker.bench_plan). Nothing is reported unless every
call is complete with no duplicate (worker.bench_check).
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Protocol

import psutil
import redis
from celery import Celery
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from worker import bench_check as check
from worker.adapters.models import JournalRow, LegRow, RequestRow
from worker.adapters.ratelimit import default_burst
from worker.bench_cpu import CpuMeter, CpuReading, cpu_split
from worker.bench_env import (
    SANDBOX_CREDENTIALS,
    BenchError,
    Sampler,
    SimulatorProcess,
    WorkerFleet,
    claim_broker,
    fresh_database,
    synced_calls,
)
from worker.bench_plan import Plan, plan_events
from worker.bench_stall import Staller
from worker.celery_app import QUEUE
from worker.domain.plan import LegState
from worker.mapping.transcript import parse_transcript
from worker.publishing import publish_event

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    calls: int = 2000
    workers: int = 1
    pool: str = "prefork"
    concurrency: int = 4                     # what the Procfile and compose deploy
    prefetch_multiplier: int = 1
    database_url: str | None = None          # None: a temporary SQLite file
    broker_url: str = "redis://127.0.0.1:6379/12"
    latency_ms: float = 0.0
    oracle_rate_limit: float = 0.0
    caliq_rate_limit: float = 0.0
    order: str = "interleaved"
    publish_rate: float = 0.0                # events per second; 0: as fast as possible
    stall_ms: float = 0.0                    # workers frozen this long every 2 s; 0: never
    noop: bool = True
    timeout: float = 1800.0


def run_bench(config: BenchConfig, say: Say = lambda _: None) -> dict[str, Any]:
    """Run the whole benchmark; the report, or BenchError when it could not run or is wrong."""
    plan = plan_events(config.calls, f"bench-{uuid.uuid4().hex[:6]}", order=config.order)
    with ExitStack() as stack:
        stack.enter_context(claim_broker(config.broker_url))
        database_url = stack.enter_context(fresh_database(config.database_url))
        sims = SimulatorProcess(config.latency_ms).start()
        stack.callback(sims.stop)
        logs = Path(stack.enter_context(TemporaryDirectory(prefix="callsync-bench-logs-")))
        fleet = WorkerFleet(_worker_env(config, sims, database_url), config.workers,
                            config.pool, config.concurrency, logs).start()
        stack.callback(fleet.stop)
        say(f"{config.workers} worker(s) ready: pool={config.pool} "
            f"concurrency={config.concurrency} database={_backend(database_url)}")
        publisher = Celery(broker=config.broker_url)
        stack.callback(publisher.close)
        # Celery's close() forgets its pool without closing it: close its broker connections here,
        # so that the run leaves no client on the database it claimed.
        stack.callback(publisher.pool.force_close_all)
        watch = BrokerWatch(config.broker_url)
        stack.callback(watch.client.close)
        meter = CpuMeter(fleet.pids(), sims.process.pid if sims.process else None)
        rounds: list[NoopRound] = []
        if config.noop:
            rounds.append(measure_noop(publisher, watch, meter, len(plan.events), say, "before"))
        engine = create_engine(database_url)
        stack.callback(engine.dispose)
        run = measure_calls(publisher, engine, plan, fleet, watch, meter, config, say)
        if config.noop:
            rounds.append(measure_noop(publisher, watch, meter, len(plan.events), say, "after"))
        say("checking the records")
        verdict = verify(engine, plan, sims)
        worker_errors = _worker_errors(fleet.logs())
    return report(config, plan, ceiling(rounds), run, verdict, database_url, worker_errors)


def _worker_env(config: BenchConfig, sims: SimulatorProcess, database_url: str) -> dict[str, str]:
    return {
        **SANDBOX_CREDENTIALS,
        "ORACLE_BASE_URL": sims.oracle_url,
        "CALIQ_BASE_URL": sims.caliq_url,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": config.broker_url,
        "CELERY_PREFETCH_MULTIPLIER": str(config.prefetch_multiplier),
        "LOG_LEVEL": "WARNING",
        "ORACLE_RATE_LIMIT_PER_SECOND": str(config.oracle_rate_limit),
        "CALIQ_RATE_LIMIT_PER_SECOND": str(config.caliq_rate_limit),
        "RATE_LIMIT_REDIS_URL": config.broker_url,
        "PYTHONUNBUFFERED": "1",
    }


def _backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


class BrokerWatch:
    """Gives up early when waiting longer cannot help: the broker restarted (its queued messages
    are gone), or nothing moved for a while with nothing left on the broker."""

    def __init__(self, url: str, stall_seconds: float = 90.0) -> None:
        self.client = redis.Redis.from_url(url)
        self.run_id = self._run_id()
        self.stall_seconds = stall_seconds
        self.progress, self.moved_at = -1, time.monotonic()
        self.reason: str | None = None

    def _run_id(self) -> str | None:
        try:
            return str(self.client.info("server").get("run_id"))
        except redis.RedisError:
            return None

    def lost(self, done: int) -> bool:
        if self._run_id() != self.run_id:
            self.reason = "the broker restarted during the run (its queued messages are lost)"
        elif done != self.progress:
            self.progress, self.moved_at = done, time.monotonic()
        elif time.monotonic() - self.moved_at > self.stall_seconds and self.empty():
            self.reason = f"no progress for {self.stall_seconds:.0f}s and nothing queued"
        return self.reason is not None

    def empty(self) -> bool:
        """Nothing queued and nothing unacknowledged (kombu's unacked hash)."""
        return self.client.llen(QUEUE) == 0 and self.client.hlen("unacked") == 0

    def wait_empty(self, timeout: float = 300) -> None:
        """Until the broker is empty twice in a row: a message is briefly in neither the queue
        nor the unacked hash while it is handed over."""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 2:
            quiet = quiet + 1 if self.empty() else 0
            if time.monotonic() > deadline:
                raise BenchError(f"the broker still holds messages after {timeout:.0f}s")
            time.sleep(0.005)


# --- Celery's ceiling -----------------------------------------------------------------------


@dataclass(frozen=True)
class NoopRound:
    """One measurement of Celery's ceiling: `tasks` empty tasks, first publish to last ack."""

    tasks: int
    seconds: float
    cpu: tuple[CpuReading, CpuReading]

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds


def measure_noop(publisher: Celery, watch: BrokerWatch, meter: CpuMeter, tasks: int, say: Say,
                 when: str) -> NoopRound:
    """Seconds for the workers to take and acknowledge `tasks` empty tasks, first publish to
    last acknowledgement (the queue and kombu's unacked hash both empty), and the CPU spent."""
    say(f"Celery ceiling, {when}: {tasks} callsync.noop tasks")
    watch.wait_empty()   # after the events: their last acknowledgements
    cpu_start = meter.read()
    started = time.perf_counter()
    with publisher.producer_or_acquire() as producer:
        for _ in range(tasks):
            publisher.send_task("callsync.noop", queue=QUEUE, producer=producer)
    watch.wait_empty()
    elapsed = time.perf_counter() - started
    cpu_end = meter.read()
    if watch.lost(-1):
        raise BenchError(f"{watch.reason}: the no-op ceiling is void")
    return NoopRound(tasks, elapsed, (cpu_start, cpu_end))


# Rounds further apart than this say the host changed speed during the run: its ratio is then
# reported with the one against the faster round, the more cautious of the two.
STEADY_SPREAD = 0.30


def ceiling(rounds: list[NoopRound]) -> dict[str, Any] | None:
    """Celery's ceiling over every round: all their tasks over all their seconds.

    It is measured before and after the events, because this machine's speed drifts within a
    run: a ceiling taken only before would be read against events run on a faster or slower
    host.
    """
    if not rounds:
        return None
    tasks, seconds = sum(r.tasks for r in rounds), sum(r.seconds for r in rounds)
    rates = [r.tasks_per_second for r in rounds]
    return {"tasks_per_second": tasks / seconds, "seconds": seconds, "rounds": rates,
            "steady": max(rates) <= min(rates) * (1 + STEADY_SPREAD),
            "cpu": cpu_split([r.cpu for r in rounds], tasks, per="task")}


# --- callsync -------------------------------------------------------------------------------


@dataclass
class CallsRun:
    started: float                               # epoch seconds of the first publish
    published: dict[tuple[str, int], float]      # (call, status) -> epoch seconds
    publish_seconds: float
    samples: list[tuple[float, int, float]]      # (seconds, calls synced, worker RSS MiB)
    cpu: dict[str, Any]                          # first publish to every call synced
    stalls: dict[str, Any] | None = None         # --stall-ms: how often and how long frozen


def measure_calls(publisher: Celery, engine: Engine, plan: Plan, fleet: WorkerFleet,
                  watch: BrokerWatch, meter: CpuMeter, config: BenchConfig, say: Say
                  ) -> CallsRun:
    say(f"callsync: {len(plan.events)} events of {plan.calls} calls "
        f"({len(set(plan.threads.values()))} threads, order={config.order})")

    def synced() -> int:
        return synced_calls(engine)

    sampler = Sampler(fleet.pids(), synced).start()
    staller = (Staller(fleet.pids(), config.stall_ms / 1000).start()
               if config.stall_ms > 0 else None)
    published: dict[tuple[str, int], float] = {}
    cpu_start = meter.read()
    started = time.time()
    with publisher.producer_or_acquire() as producer:
        for n, event in enumerate(plan.events):
            if config.publish_rate > 0:
                time.sleep(max(0.0, started + n / config.publish_rate - time.time()))
            published[(event["interaction_id"], event["status"])] = time.time()
            publish_event(publisher, event, producer=producer)
    publish_seconds = time.time() - started
    deadline, last = time.monotonic() + config.timeout, -1.0
    try:
        while (done := synced()) < plan.calls:
            if time.monotonic() > deadline or watch.lost(done):
                raise BenchError(f"{watch.reason or 'timed out'}: {done} of {plan.calls} calls "
                                 f"synced\n{_stuck(engine)}{fleet.logs()[-2000:]}")
            if time.monotonic() - last > 10:
                say(f"  {done}/{plan.calls} calls synced")
                last = time.monotonic()
            time.sleep(0.2)
        cpu = cpu_split([(cpu_start, meter.read())], len(plan.events), per="event")
        sampler.sample(time.time() - started)
    finally:
        if staller is not None:
            staller.stop()
        sampler.stop()
    stalls = None if staller is None else {
        "count": staller.stalls, "every_seconds": staller.every_seconds,
        "frozen_seconds": round(staller.frozen_seconds, 3)}
    return CallsRun(started, published, publish_seconds, sampler.samples, cpu, stalls)


def _stuck(engine: Engine) -> str:
    with engine.connect() as conn:
        rows = conn.execute(select(LegRow.state, func.count()).where(
            LegRow.state != LegState.DONE.value).group_by(LegRow.state)).all()
    return f"legs not done: {dict((r[0], r[1]) for r in rows)}\n"


# --- checking -------------------------------------------------------------------------------


@dataclass
class Verdict:
    requests: dict[str, Any]
    minimum: dict[str, int]
    logged_by_callsync: int
    rates: dict[str, dict[str, float]]
    received: dict[tuple[str, int], datetime]
    legs_done: dict[tuple[str, str], datetime]


class HasUrls(Protocol):
    oracle_url: str
    caliq_url: str


def verify(engine: Engine, plan: Plan, sims: HasUrls) -> Verdict:
    """Fails (BenchError) unless the CRMs hold exactly the run's records, complete."""
    from worker.sandbox.admin import SimulatorAdmin

    oracle, caliq = SimulatorAdmin(sims.oracle_url, 60), SimulatorAdmin(sims.caliq_url, 60)
    messages = {e["interaction_id"]: len(parse_transcript(e.get("text")))
                for e in plan.events if e.get("text")}
    problems = check.completeness_problems(oracle.state(), caliq.state(), plan.threads, messages)
    if problems:
        raise BenchError("the result is not complete:\n  " + "\n  ".join(problems[:30]))
    logs = {"oracle": oracle.requests_log(), "caliq": caliq.requests_log()}
    with engine.connect() as conn:
        rows = [(r[0], r[1], r[2]) for r in conn.execute(
            select(RequestRow.interaction_id, RequestRow.leg, RequestRow.method))]
        received: dict[tuple[str, int], datetime] = {}
        for call_id, status, at in conn.execute(
            select(JournalRow.interaction_id, JournalRow.status, func.min(JournalRow.received_at))
            .group_by(JournalRow.interaction_id, JournalRow.status)
        ):
            received[(call_id, status)] = at
        legs_done = {(r[0], r[1]): r[2] for r in conn.execute(
            select(LegRow.interaction_id, LegRow.leg, LegRow.updated_at)
            .where(LegRow.state == LegState.DONE.value))}
    return Verdict(
        requests=check.request_counts(logs),
        minimum=check.minimum_requests(rows, plan.calls),
        logged_by_callsync=len(rows),
        rates={crm: check.rate_stats(log) for crm, log in logs.items()},
        received=received, legs_done=legs_done,
    )


def _worker_errors(logs: str) -> int:
    return sum(1 for line in logs.splitlines() if '"level": "error"' in line
               or "Traceback" in line)


# --- the report -----------------------------------------------------------------------------


def report(config: BenchConfig, plan: Plan, noop: dict[str, Any] | None, run: CallsRun,
           verdict: Verdict, database_url: str, worker_errors: int) -> dict[str, Any]:
    latencies = check.applied_latencies(run.published, verdict.received, verdict.legs_done)
    finished = max(check.epoch(at) for at in verdict.legs_done.values())
    seconds = finished - run.started
    events = len(plan.events)
    eps = events / seconds
    requests = verdict.requests
    out: dict[str, Any] = {
        "calls": plan.calls,
        "events": events,
        "threads": len(set(plan.threads.values())),
        "seconds": round(seconds, 3),
        "publish_seconds": round(run.publish_seconds, 3),
        "calls_per_second": round(plan.calls / seconds, 2),
        "calls_per_hour": round(plan.calls / seconds * 3600),
        "events_per_second": round(eps, 2),
        "noop_tasks_per_second": round(noop["tasks_per_second"], 2) if noop else None,
        "noop_seconds": round(noop["seconds"], 3) if noop else None,
        # Before and after the events, and how far the machine drifted in between.
        "noop_rounds_tasks_per_second": [round(r, 2) for r in noop["rounds"]] if noop else None,
        "noop_drift_pct": (round((noop["rounds"][-1] / noop["rounds"][0] - 1) * 100, 1)
                           if noop else None),
        "ratio_to_noop": round(eps / noop["tasks_per_second"], 3) if noop else None,
        "noop_rounds_steady": noop["steady"] if noop else None,
        "ratio_to_fastest_noop_round": round(eps / max(noop["rounds"]), 3) if noop else None,
        "requests_per_call": round(requests["total"] / plan.calls, 3),
        "requests_per_call_minimum": round(verdict.minimum["minimum"] / plan.calls, 3),
        "excess_requests": requests["total"] - verdict.minimum["minimum"],
        "get_requests": requests["gets"],
        "error_responses": requests["errors"],
        "requests": requests,
        "arrival": {k: v for k, v in verdict.minimum.items() if k != "minimum"},
        "p50_seconds": round(check.percentile(latencies, 0.50), 3),
        "p90_seconds": round(check.percentile(latencies, 0.90), 3),
        "p99_seconds": round(check.percentile(latencies, 0.99), 3),
        "max_latency_seconds": round(max(latencies), 3),
        **_memory(run.samples),
        "cpu": {"noop": noop["cpu"] if noop else None, "events": run.cpu},
        "rates": verdict.rates,
        "stalls": run.stalls,
        "complete": True,
        "worker_error_lines": worker_errors,
        "settings": {**asdict(config), "database": _backend(database_url),
                     "database_url": None if config.database_url is None else "(fresh database)",
                     "total_concurrency": config.workers * config.concurrency},
        "machine": machine(),
    }
    if verdict.requests["total"] != verdict.logged_by_callsync:
        out["request_log_mismatch"] = verdict.logged_by_callsync
    if config.latency_ms > 0:
        ideal = (config.workers * config.concurrency
                 / (out["requests_per_call_minimum"] * config.latency_ms / 1000))
        out["latency_bound_calls_per_second"] = round(ideal, 2)
        out["latency_efficiency"] = round(out["calls_per_second"] / ideal, 3)
    for crm, limit in (("oracle", config.oracle_rate_limit), ("caliq", config.caliq_rate_limit)):
        if limit > 0:
            stats = verdict.rates[crm]
            # The bucket's promise: in any second, at most its rate plus its burst.
            burst = default_burst(limit)
            out["rates"][crm] = {**stats, "limit_per_second": limit,
                                 "holding": stats["average_per_second"] <= limit
                                 and stats["max_in_1s"] <= limit + burst}
    return out


def _memory(samples: list[tuple[float, int, float]]) -> dict[str, float | None]:
    """Peak worker RSS, and RSS once ~1,000 calls were synced against the end (growth)."""
    if not samples:
        return {"peak_rss_mb": None}
    at_1k = next((rss for _t, done, rss in samples if done >= 1000), None)
    end = samples[-1][2]
    out: dict[str, float | None] = {"peak_rss_mb": round(max(s[2] for s in samples), 1),
                                    "rss_end_mb": round(end, 1)}
    if at_1k is not None and samples[-1][1] >= 2000:
        out["rss_at_1000_calls_mb"] = round(at_1k, 1)
        out["rss_growth_from_1000_pct"] = round((end - at_1k) / at_1k * 100, 1)
    return out


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "processor": platform.processor() or platform.machine()}
