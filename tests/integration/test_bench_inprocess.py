"""The in-process figure (worker.bench_inprocess): the service layer over the benchmark's plan,
through real HTTP to the simulators and a fresh database, counted only when every call synced."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine

from tests.conftest import PG_ADMIN_URL
from worker.bench_env import BenchError, fresh_database
from worker.bench_inprocess import _check_synced, main


@pytest.mark.parametrize("server", [None, pytest.param(PG_ADMIN_URL, marks=pytest.mark.postgres)],
                         ids=["sqlite", "postgresql"])
def test_the_measured_calls_are_the_plans_less_the_warm_up(
        server: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--calls", "25"] + (["--database-url", server] if server else []))
    figure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The plan's first 10 threads (1-3 calls each) warm up; every measured call has 3 events.
    assert 0 < figure["calls"] < 25 and figure["events"] == 3 * figure["calls"]
    assert figure["database"] == ("sqlite" if server is None else "postgresql")
    assert figure["cpu_ms_per_event"] > 0 and figure["callgrind"] is False


def test_a_run_whose_calls_did_not_all_sync_gives_no_figure() -> None:
    with fresh_database(None) as url:
        engine = create_engine(url)
        try:
            with pytest.raises(BenchError, match="0 of 3 calls synced"):
                _check_synced(engine, 3)
        finally:
            engine.dispose()
