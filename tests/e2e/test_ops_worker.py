"""Operating a real `celery worker` on the real Redis: replay, status, logs, metrics, liveness."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.conftest import sandbox_env
from tests.e2e.conftest import REPO, WorkerProcess, wait_for
from tests.factories import call_events
from worker.sandbox.admin import SimulatorAdmin

pytestmark = pytest.mark.redis
runner = CliRunner()


def sync_state(database_url: str, call_id: str) -> str | None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT sync_state FROM calls WHERE interaction_id = :i"),
                                {"i": call_id}).scalar()
    finally:
        engine.dispose()


def cli(*args: str) -> tuple[int, str]:
    """`callsync ...` in a process of its own, as an operator runs it next to the worker."""
    result = subprocess.run([sys.executable, "-c", "from worker.cli import main; main()", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **CLI_ENV})
    return result.returncode, result.stdout


CLI_ENV: dict[str, str] = {}


@pytest.fixture
def operator_env(simulators, database_url, broker_url):  # type: ignore[no-untyped-def]
    CLI_ENV.clear()
    CLI_ENV.update(sandbox_env(simulators, database_url, CELERY_BROKER_URL=broker_url,
                               LOG_LEVEL="WARNING"))
    yield CLI_ENV
    CLI_ENV.clear()


def test_failed_call_listed_dry_run_sends_nothing_replay_task_completes_it(
    start_worker, producer, simulators, database_url, broker_url, operator_env
):
    oracle = SimulatorAdmin(simulators.oracle_url)
    oracle.set_faults([{"method": "POST", "path": "phoneCalls", "action": "400", "times": 1}])
    start_worker(database_url)
    for item in call_events("ops-1"):
        producer(item)
    assert wait_for(lambda: sync_state(database_url, "ops-1") == "failed", timeout=20)

    code, out = cli("failures", "--json")
    [row] = json.loads(out)
    assert code == 0 and row["interaction_id"] == "ops-1" and row["leg"] == "oracle_phone_call"
    assert "HTTP 400" in row["error"]

    before = len(oracle.requests_log())
    code, out = cli("replay", "--dry-run")
    assert code == 0 and "would send  oracle POST  phoneCalls" in out
    assert len(oracle.requests_log()) == before

    admin = Celery(broker=broker_url)
    admin.send_task("callsync.replay", kwargs={"ids": ["ops-1"]}, queue="callsync")
    admin.close()
    assert wait_for(lambda: sync_state(database_url, "ops-1") == "synced", timeout=20)
    assert [p["ExternalSystemCallId"] for p in oracle.state()["phoneCalls"]] == ["ops-1"]

    code, out = cli("status", "ops-1", "--json")
    view = json.loads(out)
    assert code == 0 and view["state"] == "synced" and view["error"] is None
    assert sorted(e["status"] for e in view["timeline"] if e["kind"] == "event") == [
        "IN_PROCESS", "NEW", "STOPPED"]
    assert all(e["task_id"] for e in view["timeline"] if e["kind"] == "event")
    requests = [(r["method"], r["path"].split("/")[0], r["status"]) for r in view["timeline"]
                if r["kind"] == "request"]
    assert requests.count(("POST", "interactions", 201)) == 1
    assert ("POST", "api", 200) in requests                   # Caliq
    phone_calls = [r for r in requests if r[1] == "phoneCalls"]
    assert phone_calls == [("POST", "phoneCalls", 400), ("GET", "phoneCalls", 200),
                           ("POST", "phoneCalls", 201)]      # failed, looked up, created
    assert view["records"]["oracle_phone_call_id"] == str(
        oracle.state()["phoneCalls"][0]["CallId"])
    assert cli("failures", "--json") == (0, "[]\n")


def call_log_lines(start_worker, producer, database_url, call_id: str) -> tuple[list, str]:
    """A real worker's JSON log lines that mention `call_id`, and its whole output."""
    worker = start_worker(database_url)
    for item in call_events(call_id):
        producer(item)
    assert wait_for(lambda: sync_state(database_url, call_id) == "synced", timeout=20)
    assert wait_for(lambda: worker.output().count("succeeded") >= 3, timeout=10)
    output = worker.output()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if call_id in json.dumps(line)], output


def carries_ids(line: dict, call_id: str) -> bool:
    return (line.get("interaction_id") == call_id and line.get("thread") == call_id
            and bool(line.get("task_id")))


def test_every_callsync_log_line_of_a_call_carries_its_ids_and_no_secret_or_transcript(
    start_worker, producer, simulators, database_url
):
    about, output = call_log_lines(start_worker, producer, database_url, "log-1")
    ours = [line for line in about if line["logger"].startswith("callsync")]
    assert len(ours) >= 7, about      # 3 events received, 4 steps done
    assert [line for line in ours if not carries_ids(line, "log-1")] == []
    # The card number as the transcript has it: "4111" alone also occurs in Celery's own
    # "succeeded in 0.0441118s" lines.
    for forbidden in ("sandbox-key", "sandbox-password", "charged twice", "4111 1111",
                      "refunding"):
        assert forbidden not in output


def test_celery_own_log_lines_about_a_call_carry_its_ids(
    start_worker, producer, simulators, database_url
):
    about, _ = call_log_lines(start_worker, producer, database_url, "log-2")
    theirs = [line for line in about if line["logger"].startswith("celery")]
    assert theirs, about
    assert [line for line in theirs if not carries_ids(line, "log-2")] == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_of_every_prefork_child_on_the_metrics_port(
    start_worker, producer, simulators, database_url, tmp_path
):
    port = free_port()
    SimulatorAdmin(simulators.caliq_url).set_faults([
        {"method": "POST", "path": "InteractionCreate", "action": "400", "times": 1}])
    start_worker(database_url, "--concurrency", "2", METRICS_PORT=str(port),
                 PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    for call in ("m-1", "m-2"):
        for item in call_events(call):
            producer(item)
    assert wait_for(lambda: {sync_state(database_url, c) for c in ("m-1", "m-2")}
                    == {"failed", "synced"}, timeout=20)
    samples = scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    received = sum(value("callsync_events_received_total", outcome=o)
                   for o in ("accepted", "stale", "duplicate"))
    assert received == 6                         # counted in both children, served together
    assert value("callsync_crm_requests_total", crm="oracle", endpoint="POST interactions",
                 status="201") == 2
    assert value("callsync_crm_requests_total", crm="caliq",
                 endpoint="POST api/v1/InteractionCreate", status="400") == 1
    assert value("callsync_crm_request_seconds_count", crm="oracle",
                 endpoint="PATCH interactions/{id}") == 2
    assert value("callsync_failures_total", leg="caliq", kind="permanent") == 1
    assert value("callsync_steps_total", leg="oracle_phone_call", result="done") == 2
    assert value("callsync_calls", state="synced") == 1
    assert value("callsync_calls", state="failed") == 1
    assert value("callsync_oldest_unfinished_call_age_seconds") == 0
    assert value("callsync_metrics_database_up") == 1


class Proxy:
    """A TCP proxy in front of Redis that the test can cut and restore: a broker outage that
    leaves the worker process alive."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass


def test_liveness_fails_while_the_worker_cannot_consume_and_recovers(
    simulators, broker_url, tmp_path
):
    redis_host, redis_port = broker_url.split("//")[1].split("/")[0].split(":")
    proxy = Proxy((redis_host, int(redis_port)))
    alive_file = tmp_path / "alive"
    database_url = f"sqlite:///{tmp_path / 'callsync.db'}"   # any database: one run is enough
    env = sandbox_env(simulators, database_url, LIVENESS_FILE=str(alive_file),
                      LIVENESS_INTERVAL_SECONDS="0.5",
                      CELERY_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/"
                                        + broker_url.rsplit("/", 1)[1])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    probe = [sys.executable, "-c", "from worker.cli import main; main()", "alive",
             "--max-age", "2", "--file", str(alive_file)]

    def alive() -> bool:
        return subprocess.run(probe, cwd=REPO, capture_output=True, timeout=30).returncode == 0

    try:
        worker.wait_ready()
        assert wait_for(alive, timeout=10), worker.output()[-2000:]
        proxy.cut()
        assert wait_for(lambda: not alive(), timeout=10)
        assert worker.process.poll() is None          # the process lives: only the probe knows
        proxy.restore()
        assert wait_for(alive, timeout=25), worker.output()[-2000:]
    finally:
        proxy.cut()
        worker.stop()
