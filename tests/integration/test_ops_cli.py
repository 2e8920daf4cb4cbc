"""The operating commands through typer's CliRunner, over a real database and the simulators."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from tests.conftest import REDIS_URL, sandbox_env
from tests.factories import call_events
from worker.sandbox.admin import SimulatorAdmin
from worker.service import handle_event

runner = CliRunner()


@pytest.fixture
def env(simulators, database_url, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """The process environment the commands read, and fresh process-wide caches."""
    from worker.bootstrap import reset_services
    from worker.settings import get_settings

    values = sandbox_env(simulators, database_url, CELERY_BROKER_URL=REDIS_URL,
                         LIVENESS_FILE=str(tmp_path / "alive"))
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)   # no .env of the developer's leaks in

    def reset(**changes: str | None) -> None:
        for key, value in changes.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        reset_services()

    reset()
    yield reset
    reset()


def run(*args: str):  # type: ignore[no-untyped-def]
    from worker.cli import cli

    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_failures_dry_run_replay_and_status(env, simulators):
    from worker.bootstrap import get_services

    SimulatorAdmin(simulators.oracle_url).set_faults([
        {"method": "POST", "path": "phoneCalls", "action": "400", "times": 1}])
    svc = get_services()
    for e in call_events("cli-1"):
        handle_event(svc, e)
    handle_event(svc, {"interaction_id": "cli-bad", "status": 3})

    listed = run("failures", "--json")
    assert listed.exit_code == 0
    rows = {r["interaction_id"]: r for r in json.loads(listed.stdout)}
    assert rows["cli-1"]["leg"] == "oracle_phone_call"
    assert "HTTP 400" in rows["cli-1"]["error"] and rows["cli-1"]["attempts"] == 1
    assert rows["cli-bad"]["leg"] == "input"
    only = json.loads(run("failures", "--json", "--leg", "input").stdout)
    assert [r["interaction_id"] for r in only] == ["cli-bad"]
    assert json.loads(run("failures", "--json", "--since", "2099-01-01T00:00:00Z").stdout) == []
    assert "cli-1" in run("failures").stdout

    log_size = len(SimulatorAdmin(simulators.oracle_url).requests_log())
    dry = run("replay", "--dry-run")
    assert dry.exit_code == 0
    assert "would send  oracle POST  phoneCalls" in dry.stdout
    assert len(SimulatorAdmin(simulators.oracle_url).requests_log()) == log_size

    done = run("replay", "--json")
    assert done.exit_code == 0, done.stdout
    report = json.loads(done.stdout)
    assert report["counts"] == {"ok": 1} and report["failed"] is False
    assert len(SimulatorAdmin(simulators.oracle_url).state()["phoneCalls"]) == 1

    again = run("replay", "cli-1")     # already synced: nothing to send, nothing duplicated
    assert again.exit_code == 0
    assert len(SimulatorAdmin(simulators.oracle_url).state()["phoneCalls"]) == 1

    shown = run("status", "cli-1", "--json")
    view = json.loads(shown.stdout)
    assert view["state"] == "synced" and view["error"] is None
    statuses = [(i["method"], i["path"], i["status"]) for i in view["timeline"]
                if i["kind"] == "request" and i["path"] == "phoneCalls"]
    assert statuses == [("POST", "phoneCalls", 400), ("GET", "phoneCalls", 200),
                        ("POST", "phoneCalls", 201)]
    table = run("status", "cli-1")
    assert table.exit_code == 0 and "phoneCalls" in table.stdout
    assert "charged twice" not in table.stdout + shown.stdout
    assert run("status", "nobody").exit_code == 1
    rejected = json.loads(run("status", "cli-bad", "--json").stdout)
    assert rejected["state"] == "rejected" and "customer_id" in rejected["error"]


def test_replay_exit_code_says_a_call_is_still_failing(env, simulators):
    from worker.bootstrap import get_services

    SimulatorAdmin(simulators.oracle_url).set_faults([
        {"method": "POST", "path": "phoneCalls", "action": "400", "times": 3}])
    svc = get_services()
    for e in call_events("still-bad"):
        handle_event(svc, e)
    result = run("replay", "still-bad", "--json")
    assert result.exit_code == 1
    [call] = json.loads(result.stdout)["calls"]
    assert call["outcome"] == "failed" and "HTTP 400" in call["error"]
    table = run("replay", "still-bad")
    assert table.exit_code == 1 and "replay: 1 calls  failed=1" in table.stdout
    assert run("replay", "--state", "bogus").exit_code == 2
    assert run("replay", "--since", "yesterday-ish").exit_code == 2
    assert run("replay", "--resync").exit_code == 2        # a resync needs a selection


def test_check_passes_and_names_each_failure(env, simulators, tmp_path):
    ok = run("check", "--json")
    lines = {c["check"]: c for c in json.loads(ok.stdout)}
    assert ok.exit_code == 0, lines
    assert set(lines) == {"settings", "database", "broker", "mappings", "oracle", "caliq"}
    assert "channel 1 (Phone)" in lines["caliq"]["detail"]

    env(CALIQ_API_KEY="not-the-key", ORACLE_PASSWORD="not-the-password")
    bad = run("check")
    assert bad.exit_code == 1
    assert "FAIL caliq" in bad.stdout and "credentials refused" in bad.stdout
    assert "FAIL oracle" in bad.stdout
    assert "not-the-key" not in bad.stdout and "not-the-password" not in bad.stdout

    env(CALIQ_API_KEY="sandbox-key", ORACLE_PASSWORD="sandbox-password", CALIQ_CHANNEL_ID="9",
        DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}",
        CELERY_BROKER_URL="redis://:s3cret@127.0.0.1:1/0")
    lines = {c["check"]: c for c in json.loads(run("check", "--json").stdout)}
    assert not lines["database"]["ok"] and "callsync db upgrade" in lines["database"]["detail"]
    assert not lines["broker"]["ok"] and "s3cret" not in lines["broker"]["detail"]
    assert not lines["caliq"]["ok"] and "CALIQ_CHANNEL_ID=9" in lines["caliq"]["detail"]
    assert lines["oracle"]["ok"]

    env(ORACLE_BASE_URL=None)
    lines = {c["check"]: c for c in json.loads(run("check", "--json").stdout)}
    assert "ORACLE_BASE_URL" in lines["settings"]["detail"]
    assert lines["oracle"]["detail"] == "skipped: settings are invalid"


def test_alive_reads_the_liveness_file_age(env, tmp_path):
    path = tmp_path / "alive"
    missing = run("alive")
    assert missing.exit_code == 1 and "never consumed" in missing.stderr
    path.touch()
    assert run("alive", "--max-age", "60").exit_code == 0
    old = time.time() - 300
    os.utime(path, (old, old))
    stale = run("alive", "--max-age", "120")
    assert stale.exit_code == 1 and "300s ago" in stale.stderr
    env(LIVENESS_FILE=None)
    assert run("alive").exit_code == 2
