"""`callsync bench`: the benchmark's command line; the work is in worker.bench."""

from __future__ import annotations

import json
import signal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.bench_plan import ORDERS

Opt = typer.Option
CPU_GROUPS = {"worker_main": "worker main", "worker_pool": "pool", "simulators": "simulators",
              "benchmark": "benchmark", "rest_of_machine": "rest"}


def bench(
    calls: Annotated[int, Opt(min=1, help="Calls to publish (each 3 events).")] = 2000,
    workers: Annotated[int, Opt(min=1, help="Worker processes.")] = 1,
    pool: Annotated[str, Opt(
        help="Celery pool: prefork, threads, gevent, eventlet or solo.")] = "prefork",
    concurrency: Annotated[int, Opt(
        min=1, help="Pool size of each worker; 4, as the Procfile and compose run it.")] = 4,
    prefetch_multiplier: Annotated[int, Opt(
        min=1, help="Messages each worker reserves per pool slot.")] = 1,
    database_url: Annotated[str | None, Opt(
        help="PostgreSQL server to use (a fresh database is created and dropped); "
             "default: a temporary SQLite file.")] = None,
    broker_url: Annotated[str, Opt(
        help="A Redis database of the benchmark's own: it is flushed first.")]
        = "redis://127.0.0.1:6379/12",
    latency_ms: Annotated[float, Opt(min=0, help="Latency the simulators add per request.")] = 0,
    oracle_rate_limit: Annotated[float, Opt(min=0, help="Oracle requests/s, shared (0: off).")]
        = 0,
    caliq_rate_limit: Annotated[float, Opt(min=0, help="Caliq requests/s, shared (0: off).")]
        = 0,
    order: Annotated[str, Opt(help=f"Publishing order: {', '.join(ORDERS)}.")] = "interleaved",
    publish_rate: Annotated[float, Opt(min=0, help="Events/s to publish at (0: at once).")] = 0,
    stall_ms: Annotated[float, Opt(
        min=0, max=1999, help="Freeze every worker this long every 2 s, as a host that takes "
                              "their CPU away (0: never).")] = 0,
    noop: Annotated[bool, Opt(
        help="Measure Celery's no-op ceiling, before the calls and after them.")] = True,
    timeout: Annotated[float, Opt(min=1, help="Seconds to wait for every call.")] = 1800,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object as the last line.")]
        = False,
) -> None:
    """Measure throughput against Celery's own ceiling, requests per call, latency and memory."""
    from worker.bench import BenchConfig, run_bench
    from worker.bench_env import BenchError

    if pool not in ("prefork", "threads", "gevent", "eventlet", "solo"):
        raise typer.BadParameter(f"unknown pool {pool!r}", param_hint="--pool")
    if order not in ORDERS:
        raise typer.BadParameter(f"one of {', '.join(ORDERS)}", param_hint="--order")
    config = BenchConfig(
        calls=calls, workers=workers, pool=pool, concurrency=concurrency,
        prefetch_multiplier=prefetch_multiplier,
        database_url=database_url, broker_url=broker_url, latency_ms=latency_ms,
        oracle_rate_limit=oracle_rate_limit, caliq_rate_limit=caliq_rate_limit, order=order,
        publish_rate=publish_rate, stall_ms=stall_ms, noop=noop, timeout=timeout,
    )
    err = Console(stderr=True)
    # A terminated benchmark still stops its workers and simulators and drops its database.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_bench(config, say=lambda line: err.print(line, highlight=False))
    except BenchError as exc:
        err.print(f"[red]benchmark failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        Console().print(result_table(result))


def _ceiling(result: dict[str, Any]) -> str:
    rounds = result["noop_rounds_tasks_per_second"]
    if not rounds:
        return str(result["noop_tasks_per_second"])
    return (f"{result['noop_tasks_per_second']} (before the events {rounds[0]:g}, after "
            f"{rounds[-1]:g}: {result['noop_drift_pct']:+}%)")


def _ratio(result: dict[str, Any]) -> str:
    from worker.bench import STEADY_SPREAD

    ratio = str(result["ratio_to_noop"])
    if result.get("noop_rounds_steady") is False:
        ratio += (f" (the ceiling's rounds are more than {STEADY_SPREAD:.0%} apart: against the "
                  f"faster one, {result['ratio_to_fastest_noop_round']})")
    return ratio


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def result_table(result: dict[str, Any]) -> Table:
    """The readable form of a result: one row per figure."""
    s = result["settings"]
    table = Table(title=f"callsync bench: {result['calls']} calls, {s['workers']}x{s['pool']}"
                        f"/{s['concurrency']}, {s['database']}, latency {s['latency_ms']:g} ms")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("calls per second", result["calls_per_second"]),
        ("calls per hour", f"{result['calls_per_hour']:,}"),
        ("events per second", result["events_per_second"]),
        ("Celery no-op tasks per second", _ceiling(result)),
        ("ratio to no-op", _ratio(result)),
        ("requests per call (minimum)",
         f"{result['requests_per_call']} ({result['requests_per_call_minimum']})"),
        ("GET requests", result["get_requests"]),
        ("latency p50 / p99 (s)", f"{result['p50_seconds']} / {result['p99_seconds']}"),
        ("peak worker RSS (MiB)", result["peak_rss_mb"]),
    ]
    if "latency_efficiency" in result:
        rows.append(("of the latency-bound ideal", f"{result['latency_efficiency']:.0%}"))
    if "rss_growth_from_1000_pct" in result:
        rows.append(("RSS from call 1,000 to the end",
                     f"{result['rss_at_1000_calls_mb']} -> {result['rss_end_mb']} MiB "
                     f"({result['rss_growth_from_1000_pct']:+}%)"))
    for phase, per, label in (("noop", "task", "no-op task"), ("events", "event", "event")):
        cpu = result["cpu"][phase]
        if cpu is not None:
            ms = cpu[f"ms_per_{per}"]
            rows.append((f"CPU per {label} (ms)", " · ".join(
                f"{name} {ms[group]:.2f}" for group, name in CPU_GROUPS.items())
                + f" · all {ms['all']:.2f} on {cpu['cores_busy']} cores"
                + f" ({cpu['cores_stolen']} stolen)"))
    for crm, stats in result["rates"].items():
        limit = f" (limit {stats['limit_per_second']:g})" if "limit_per_second" in stats else ""
        rows.append((f"{crm} requests/s average, busiest 1 s{limit}",
                     f"{stats['average_per_second']} / {stats['max_in_1s']}"))
    if result.get("stalls"):
        stalls = result["stalls"]
        rows.append(("workers frozen (--stall-ms)",
                     f"{stalls['count']} times, {stalls['frozen_seconds']} s in all"))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def bench_inprocess(
    calls: Annotated[int, Opt(min=1, help="Calls in the plan (each 3 events); those of its "
                                          "first 10 threads warm up, unmeasured.")] = 120,
    database_url: Annotated[str | None, Opt(
        help="PostgreSQL server to use (a fresh database is created and dropped); "
             "default: a temporary SQLite file.")] = None,
) -> None:
    """The service layer alone over the benchmark's plan, in this process: its CPU per event,
    and under callgrind its instructions (see the README's Performance section)."""
    from worker.bench_env import BenchError
    from worker.bench_inprocess import run_in_process

    try:
        result = run_in_process(calls, database_url)
    except (BenchError, ValueError) as exc:
        Console(stderr=True).print(f"[red]benchmark failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    print(json.dumps(result))
