"""The hot path in one process: a figure of callsync's own CPU that the host's noise cannot move.

On a shared virtual machine `callsync bench` moves by 10-15% in CPU per event from one run to
the next, more than most changes to the code. This runs the service layer over the same plan of
calls in this process (`handle_event`, what a worker's task runs, with no Celery around it),
against the simulators in a process of their own and a fresh database, and reports this
process's CPU per event. Under callgrind it also gives the instructions, which repeat within
0.3% from run to run whatever else the machine does:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/callsync bench-inprocess --calls 120 --database-url URL

Callgrind counts only the measured events (the warm-up, the imports and the set-up are left
out): instructions per event are the `Collected` total valgrind prints at the end over the
`events` this prints.

On a PostgreSQL server of this machine it also gives the server's CPU per event: that of the
backends serving this run's database over the measured events (`server_cpu_ms_per_event`;
null for SQLite, or a server elsewhere). The benchmark's workers share their cores with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from worker.bench_env import (
    SANDBOX_CREDENTIALS,
    BenchError,
    SimulatorProcess,
    fresh_database,
    synced_calls,
)
from worker.bench_plan import plan_events


def _callgrind(switch: str) -> bool:
    """Instrumentation on or off for this process; False unless it runs under callgrind
    (valgrind's preload is in the environment and callgrind_control finds this process)."""
    if "vgpreload" not in os.environ.get("LD_PRELOAD", "") or not shutil.which("callgrind_control"):
        return False
    done = subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())],
                          capture_output=True, check=False)
    return done.returncode == 0


def run_in_process(calls: int, database_url: str | None, warm_up_threads: int = 10
                   ) -> dict[str, Any]:
    """CPU of this process per event over the plan of `calls` calls, less the calls of its
    first `warm_up_threads` threads, which are run first and not measured."""
    from worker.bootstrap import build_services
    from worker.logs import configure_logging
    from worker.service import handle_event
    from worker.settings import load_settings

    configure_logging("WARNING")   # as the benchmark's workers run (and, like them, with
    # prometheus_client's values in memory unless PROMETHEUS_MULTIPROC_DIR is set)
    plan = plan_events(calls, "inproc")
    threads = sorted(set(plan.threads.values()))
    warm = set(threads[:warm_up_threads])
    warm_up = [e for e in plan.events if plan.threads[e["interaction_id"]] in warm]
    measured = [e for e in plan.events if plan.threads[e["interaction_id"]] not in warm]
    if not measured:
        raise ValueError(f"{calls} calls leave nothing to measure after the warm-up")
    sims = SimulatorProcess(latency_ms=0.0).start()
    try:
        with fresh_database(database_url, prefix="callsync_inproc") as url:
            credentials = {k.lower(): v for k, v in SANDBOX_CREDENTIALS.items()}
            svc = build_services(load_settings(
                **credentials, database_url=url, oracle_base_url=sims.oracle_url,
                caliq_base_url=sims.caliq_url))
            try:
                for event in warm_up:
                    handle_event(svc, event)
                server = _server_cpu(url)
                counted = _callgrind("on")
                cpu, wall = time.process_time(), time.perf_counter()
                for event in measured:
                    handle_event(svc, event)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                _callgrind("off")
                server_cpu = _server_cpu_since(url, server)
                _check_synced(svc.engine, plan.calls)
            finally:
                svc.engine.dispose()
    finally:
        sims.stop()
    return {"calls": len({e["interaction_id"] for e in measured}), "events": len(measured),
            "database": "sqlite" if database_url is None else "postgresql",
            "cpu_ms_per_event": round(1000 * cpu / len(measured), 3),
            "server_cpu_ms_per_event": (None if server_cpu is None
                                        else round(1000 * server_cpu / len(measured), 3)),
            "wall_ms_per_event": round(1000 * wall / len(measured), 3),
            "callgrind": counted}


def _server_cpu(url: str) -> dict[int, float] | None:
    """CPU seconds of each PostgreSQL backend serving `url`'s database (this probe's own
    connection aside), when the server runs on this machine; None otherwise."""
    if not url.startswith("postgresql"):
        return None
    probe = create_engine(url, poolclass=NullPool)
    try:
        with probe.connect() as conn:
            pids = conn.scalars(text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all()
    finally:
        probe.dispose()
    try:
        return {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}
    except psutil.Error:   # a server elsewhere (or a backend that just ended)
        return None


def _server_cpu_since(url: str, before: dict[int, float] | None) -> float | None:
    """The backends' CPU seconds since `before`; None if one of them ended meanwhile."""
    if before is None:
        return None
    after = _server_cpu(url)
    if after is None or not before.keys() <= after.keys():
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _check_synced(engine: Engine, calls: int) -> None:
    """A figure counts only if every call was synced: failing events cost less."""
    synced = synced_calls(engine)
    if synced != calls:
        raise BenchError(f"{synced} of {calls} calls synced: no figure")
