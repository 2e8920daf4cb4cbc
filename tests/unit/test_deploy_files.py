"""The deployment files, checked by parsing them (no Docker engine runs here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from worker.settings import BaseConfig, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
REQUIRED = sorted(name.upper() for name, field in Settings.model_fields.items()
                  if field.is_required())


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return value if isinstance(value, list) else shlex.split(value)


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def default(value: str) -> str:
    """`${NAME:-default}` as compose resolves it with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_every_service_is_there():
    assert {"redis", "postgres", "worker", "beat", "flower", "simulators", "migrate"} <= set(
        SERVICES)


def test_redis_keeps_its_queue_across_restarts():
    cmd = command("redis")
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


@pytest.mark.parametrize("service", ["worker", "beat", "migrate"])
def test_callsync_processes_get_every_required_setting(service):
    env = environment(service)
    missing = [name for name in REQUIRED if name not in env]
    assert missing == []
    assert "ORACLE_USERNAME" in env and "ORACLE_PASSWORD" in env   # or ORACLE_TOKEN
    # The settings the compose file gives are valid settings (nothing misspelled).
    known = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    assert set(env) - known == set()


@pytest.mark.parametrize("service", ["worker", "beat", "migrate"])
def test_broker_and_database_point_at_the_compose_services(service):
    env = {k: default(v) for k, v in environment(service).items()}
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
    assert re.match(r"postgresql\+psycopg://\w+:[^@]+@postgres:5432/\w+$", env["DATABASE_URL"])
    assert env["ORACLE_BASE_URL"] == "http://simulators:8801"
    assert env["CALIQ_BASE_URL"] == "http://simulators:8802"
    db = default(env["DATABASE_URL"]).rsplit("/", 1)[1]
    pg = {k: default(v) for k, v in environment("postgres").items()}
    assert db == pg["POSTGRES_DB"]
    assert f"//{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@" in env["DATABASE_URL"]


def test_the_settings_from_compose_load(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = {k: default(v) for k, v in environment("worker").items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # type: ignore[call-arg]
    assert settings.metrics_port == 9100
    assert str(settings.liveness_file) == env["LIVENESS_FILE"]
    assert BaseConfig().celery_broker_url == "redis://redis:6379/0"


def test_commands_run_the_worker_beat_migrations_simulators_and_flower():
    worker = command("worker")
    assert worker[:4] == ["celery", "-A", "worker", "worker"]
    assert worker[worker.index("-Q") + 1] == "callsync"
    assert command("beat")[:4] == ["celery", "-A", "worker", "beat"]
    assert command("migrate") == ["callsync", "db", "upgrade"]
    sims = command("simulators")
    assert sims[:3] == ["python", "-m", "worker.sandbox.server"]
    assert sims[sims.index("--host") + 1] == "0.0.0.0"
    assert (sims[sims.index("--oracle-port") + 1], sims[sims.index("--caliq-port") + 1]) == (
        "8801", "8802")
    assert "flower" in command("flower")
    assert environment("flower")["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    for service in ("worker", "beat", "migrate", "simulators"):
        assert SERVICES[service]["build"] == "."


def test_workers_start_after_migrations_and_are_probed_for_liveness():
    for service in ("worker", "beat"):
        depends = SERVICES[service]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    probe = SERVICES["worker"]["healthcheck"]["test"]
    assert probe[1:4] == ["callsync", "alive", "--max-age"]
    assert "9100:9100" in SERVICES["worker"]["ports"]


def test_procfile_has_release_worker_and_beat():
    entries = dict(line.split(": ", 1) for line in
                   (REPO / "Procfile").read_text().splitlines() if line.strip())
    assert set(entries) == {"release", "worker", "beat"}
    assert entries["release"] == "callsync db upgrade"
    assert shlex.split(entries["worker"])[:6] == ["celery", "-A", "worker", "worker", "-Q",
                                                  "callsync"]
    assert shlex.split(entries["beat"])[:4] == ["celery", "-A", "worker", "beat"]


def test_dockerfile_sets_the_multiprocess_metrics_dir_and_mappings():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"PROMETHEUS_MULTIPROC_DIR=\S+", text)
    assert "CALLSYNC_MAPPINGS_DIR=/app/mappings" in text
    assert "COPY mappings" in text
    assert re.search(r"^USER \w+", text, re.M)   # not root


def test_the_benchmark_measures_the_concurrency_that_is_deployed():
    """`callsync bench` with no --concurrency runs the pool the Procfile and compose start."""
    import inspect

    from worker.bench import BenchConfig
    from worker.commands.bench import bench

    procfile = (REPO / "Procfile").read_text()
    deployed = re.search(r"--concurrency \$\{WORKER_CONCURRENCY:-(\d+)\}", procfile)
    assert deployed is not None
    worker = command("worker")
    compose = int(default(worker[worker.index("--concurrency") + 1]))
    cli = inspect.signature(bench).parameters["concurrency"].default
    assert int(deployed.group(1)) == compose == cli == BenchConfig.concurrency
