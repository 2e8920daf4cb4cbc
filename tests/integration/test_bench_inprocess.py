"""`callsync bench-inprocess` (worker.bench_inprocess): the service layer over the benchmark's
plan, through real HTTP to the simulators and a fresh database, counted only when every call
synced."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.conftest import PG_ADMIN_URL
from worker.bench_env import BenchError, fresh_database
from worker.bench_inprocess import _check_synced, _server_cpu, _server_cpu_since
from worker.cli import cli


@pytest.mark.parametrize("server", [None, pytest.param(PG_ADMIN_URL, marks=pytest.mark.postgres)],
                         ids=["sqlite", "postgresql"])
def test_the_measured_calls_are_the_plans_less_the_warm_up(server: str | None) -> None:
    result = CliRunner().invoke(
        cli, ["bench-inprocess", "--calls", "25"] + (["--database-url", server] if server else []))
    assert result.exit_code == 0, result.output
    figure = json.loads(result.stdout.strip().splitlines()[-1])
    # The plan's first 10 threads (1-3 calls each) warm up; every measured call has 3 events.
    assert 0 < figure["calls"] < 25 and figure["events"] == 3 * figure["calls"]
    assert figure["database"] == ("sqlite" if server is None else "postgresql")
    assert figure["cpu_ms_per_event"] > 0 and figure["callgrind"] is False
    # The server's CPU only where there is a server, here on this machine (so few events may
    # take less than one of the kernel's clock ticks: see the test below for the reading).
    server_cpu = figure["server_cpu_ms_per_event"]
    assert server_cpu is None if server is None else server_cpu >= 0


def test_a_plan_too_small_to_measure_is_refused_by_name() -> None:
    result = CliRunner().invoke(cli, ["bench-inprocess", "--calls", "5"])
    assert result.exit_code == 1
    assert "5 calls leave nothing to measure after the warm-up" in result.stderr


def test_a_run_whose_calls_did_not_all_sync_gives_no_figure() -> None:
    with fresh_database(None) as url:
        engine = create_engine(url)
        try:
            with pytest.raises(BenchError, match="0 of 3 calls synced"):
                _check_synced(engine, 3)
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_the_servers_cpu_is_that_of_the_databases_backends() -> None:
    """What a backend of the database spends is counted; a backend that ended meanwhile makes
    the reading void rather than short."""
    with fresh_database(PG_ADMIN_URL, prefix="callsync_test") as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                before = _server_cpu(url)
                assert before is not None and len(before) == 1   # this connection's backend
                conn.execute(text("SELECT count(*) FROM generate_series(1, 3000000)"))
                spent = _server_cpu_since(url, before)
                assert spent is not None and spent > 0.05
                conn.invalidate()   # its backend ends, a moment later
            for _ in range(50):
                if not (_server_cpu(url) or {}).keys() & before.keys():
                    break
                time.sleep(0.1)
            assert _server_cpu_since(url, before) is None
        finally:
            engine.dispose()
