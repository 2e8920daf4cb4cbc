"""`callsync sync` and `callsync db upgrade` through typer's CliRunner, on real databases."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select
from typer.testing import CliRunner

from tests.conftest import sandbox_env
from tests.factories import call_events
from worker.adapters.models import Base, JournalRow
from worker.cli import cli
from worker.sandbox.admin import SimulatorAdmin


@pytest.fixture
def cli_env(monkeypatch, simulators, database_url):
    from worker.bootstrap import reset_services
    from worker.settings import get_base_config, get_settings

    for name, value in sandbox_env(simulators, database_url).items():
        monkeypatch.setenv(name, value)
    for cached in (get_settings, get_base_config):
        cached.cache_clear()
    reset_services()
    yield database_url
    for cached in (get_settings, get_base_config):
        cached.cache_clear()
    reset_services()


def test_migrations_match_the_models(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_db_upgrade_creates_the_schema(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    from worker.settings import get_base_config

    get_base_config.cache_clear()
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"journal", "threads", "calls", "call_legs", "requests", "deliveries"} <= tables


def test_sync_applies_a_file_with_a_bad_line(cli_env, simulators, tmp_path):
    lines = [json.dumps(e) for e in call_events("file-1")] + ["{not json", json.dumps(
        call_events("file-1")[2])]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["sync", str(path)])
    assert result.exit_code == 1, result.output    # a rejected line makes the run fail
    assert "accepted=3" in result.output and "duplicate=1" in result.output
    assert "rejected=1" in result.output
    assert f"{path}:4: event: not valid JSON" in result.output
    caliq = SimulatorAdmin(simulators.caliq_url).state()
    assert [c["UniqueID"] for c in caliq["interactions"]] == ["file-1"]
    engine = create_engine(cli_env)
    with engine.connect() as conn:
        sources = [r[0] for r in conn.execute(select(JournalRow.source))]
    engine.dispose()
    assert sources[:2] == ["file:1", "file:2"]


def test_bad_configuration_is_reported_by_name(monkeypatch, tmp_path):
    from worker.settings import get_settings

    for name in ("ORACLE_BASE_URL", "CALIQ_BASE_URL", "CALIQ_API_KEY", "CALIQ_CHANNEL_ID"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    path = tmp_path / "e.jsonl"
    path.write_text("{}\n")
    result = CliRunner().invoke(cli, ["sync", str(path)])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert "CALIQ_API_KEY" in result.output
