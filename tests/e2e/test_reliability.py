"""The worst days, with real processes: killed children, a killed worker, a Redis restart with
no persistence, two workers racing on shared threads, a poison message, RabbitMQ."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from kombu import Connection
from sqlalchemy import create_engine, text

from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import wait_for
from tests.factories import call_events, stream
from worker.sandbox.admin import SimulatorAdmin

# Short leases and timeouts so that recovery happens within a test's patience.
FAST_RECOVERY = {
    "LEASE_SECONDS": "3",
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "SWEEP_INTERVAL_SECONDS": "1",
    "SWEEP_QUIET_SECONDS": "2",
    "HTTP_CONNECT_TIMEOUT": "0.5",
    "HTTP_READ_TIMEOUT": "0.5",
    "TASK_TIME_LIMIT_SECONDS": "20",
}
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port",
               "6379", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]


def pool_children(parent: psutil.Process) -> list[psutil.Process]:
    """Prefork pool processes (setproctitle names them), not the embedded beat."""
    found = []
    for child in parent.children():
        try:
            if "ForkPoolWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass  # exited, or a zombie the parent has not reaped yet
    return found


def records(sims) -> dict[str, list[str]]:
    oracle = SimulatorAdmin(sims.oracle_url).state()
    caliq = SimulatorAdmin(sims.caliq_url).state()
    return {
        "interactions": sorted(i["MediaItemId"] for i in oracle["interactions"]),
        "phoneCalls": sorted(p["ExternalSystemCallId"] for p in oracle["phoneCalls"]),
        "caliq": sorted(c["UniqueID"] for c in caliq["interactions"]),
    }


def complete(sims, calls) -> bool:
    return all(ids == calls for ids in records(sims).values())


def assert_exactly_once(sims, calls, timeout: float, faults: str = "") -> None:
    """Waits for every record; fails on a missing one, and on a duplicate at any time."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        seen = records(sims)
        for kind, ids in seen.items():
            assert len(ids) == len(set(ids)), f"duplicate {kind}: {ids}"
        if all(ids == calls for ids in seen.values()):
            print(f"\n{len(calls)} calls, {faults}: {3 * len(calls)} records, "
                  f"duplicates 0, lost 0, complete {time.monotonic() - started:.1f}s after")
            return
        time.sleep(0.5)
    missing = {k: sorted(set(calls) - set(v)) for k, v in records(sims).items()}
    raise AssertionError(f"not complete after {timeout}s; missing {missing}")


def publish_stream(producer, prefix: str, threads: int) -> list[str]:
    events = stream(prefix, threads=threads, seed=11)
    for event in events:
        producer(event)
    return sorted({e["interaction_id"] for e in events})


def test_killed_prefork_children_lose_nothing_and_duplicate_nothing(
    start_worker, producer, simulators, database_url, tmp_path
):
    SimulatorAdmin(simulators.oracle_url).configure(latency_ms=15)
    try:
        worker = start_worker(database_url, "--concurrency", "2", "-B", "-s",
                              str(tmp_path / "beat"), **FAST_RECOVERY)
        calls = publish_stream(producer, "kill", threads=12)
        parent = psutil.Process(worker.process.pid)
        killed = 0
        for _ in range(6):
            time.sleep(0.7)
            children = pool_children(parent)
            if children:
                children[0].send_signal(signal.SIGKILL)
                killed += 1
        assert killed >= 3
        assert_exactly_once(simulators, calls, timeout=120,
                            faults=f"{killed} pool children SIGKILLed")
    finally:
        SimulatorAdmin(simulators.oracle_url).configure(latency_ms=0)


def test_killed_worker_restarted_finishes_every_call(start_worker, producer, simulators,
                                                     database_url, tmp_path):
    SimulatorAdmin(simulators.oracle_url).configure(latency_ms=30)
    try:
        env = {**FAST_RECOVERY, "CELERY_VISIBILITY_TIMEOUT": "10"}
        first = start_worker(database_url, "--concurrency", "2", **env)
        calls = publish_stream(producer, "crash", threads=8)
        wait_for(lambda: len(records(simulators)["interactions"]) >= 3, timeout=30)
        os.killpg(first.process.pid, signal.SIGKILL)   # main process and children at once
        first.process.wait()
        start_worker(database_url, "--concurrency", "2", "-B", "-s", str(tmp_path / "beat"),
                     **env)
        assert_exactly_once(simulators, calls, timeout=120,
                            faults="whole worker SIGKILLed mid-run, then restarted")
    finally:
        SimulatorAdmin(simulators.oracle_url).configure(latency_ms=0)


@pytest.mark.skipif(os.geteuid() != 0, reason="restarts the machine's Redis server")
def test_redis_restart_without_persistence_the_sweep_completes(start_worker, producer,
                                                               simulators, database_url,
                                                               tmp_path):
    oracle = SimulatorAdmin(simulators.oracle_url)
    # Oracle in maintenance: every interaction waits in a back-off when Redis goes away.
    oracle.set_faults([{"method": "POST", "path": "interactions", "action": "503",
                        "times": 0, "retry_after": 2}])
    start_worker(database_url, "--concurrency", "2", "-B", "-s", str(tmp_path / "beat"),
                 **FAST_RECOVERY)
    events = stream("redis", threads=6, seed=11)
    for event in events:
        producer(event)
    calls = sorted({e["interaction_id"] for e in events})
    engine = create_engine(database_url)

    def journaled() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM journal")).scalar_one()

    # Every event is in the database (what was only in Redis cannot come back) ...
    assert wait_for(lambda: journaled() == len(events), timeout=60)
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False)
    wait_for(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).returncode != 0,
             timeout=10)
    subprocess.run(REDIS_START, check=True)
    assert wait_for(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True,
                                           text=True).stdout.strip() == "PONG", timeout=20)
    oracle.set_faults([])   # maintenance over; every queued retry was lost with Redis
    assert_exactly_once(simulators, calls, timeout=120,
                        faults="Oracle 503 on every create, Redis restarted without persistence")
    engine.dispose()


def test_two_workers_on_one_sqlite_file_share_threads(start_worker, producer, simulators,
                                                      tmp_path):
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = start_worker(database_url, "--concurrency", "2", "-n", "one@%h")
    second = start_worker(database_url, "--concurrency", "2", "-n", "two@%h")
    calls = publish_stream(producer, "two", threads=20)
    assert_exactly_once(simulators, calls, timeout=120,
                        faults="two workers racing on shared threads, one SQLite file")
    oracle = SimulatorAdmin(simulators.oracle_url).state()
    top = {i["MediaItemId"]: i["InteractionId"] for i in oracle["interactions"]}
    for item in oracle["interactions"]:
        assert item["ParentInteractionId"] == top[item["MediaItemId"].split("-c")[0]]
    for worker in (first, second):
        assert "database is locked" not in worker.output()
        assert "succeeded" in worker.output(), "both workers took part"


def test_poison_message_is_quarantined_not_looped(start_worker, producer, simulators,
                                                  database_url):
    worker = start_worker(database_url, "--concurrency", "1", "--max-tasks-per-child", "100",
                          CALLSYNC_CHAOS_CRASH_IDS="poison-1", REDELIVERY_CAP="3")
    producer(call_events("poison-1")[2])
    producer(call_events("healthy-1")[2])
    engine = create_engine(database_url)

    def poison_rows() -> list:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT error FROM journal WHERE outcome = 'poison'")).all()

    assert wait_for(lambda: bool(poison_rows()), timeout=90), worker.output()[-2000:]
    assert "died 3 times" in poison_rows()[0][0]
    assert wait_for(lambda: records(simulators)["caliq"] == ["healthy-1"], timeout=30)
    assert worker.process.poll() is None, "the worker goes on"
    engine.dispose()


@pytest.mark.rabbitmq
def test_rabbitmq_broker_works_too(start_worker, simulators, database_url):
    from celery import Celery

    with Connection(RABBITMQ_URL) as conn:
        conn.default_channel.queue_delete("callsync")   # start empty; the worker declares it
    start_worker(database_url, CELERY_BROKER_URL=RABBITMQ_URL)
    producer = Celery(broker=RABBITMQ_URL)
    events = stream("amqp", threads=4, seed=5)
    for event in events:
        producer.send_task("callsync.phone_call", args=[event], queue="callsync")
    producer.close()
    assert_exactly_once(simulators, sorted({e["interaction_id"] for e in events}), timeout=60)
