"""A real `celery worker` subprocess on the real broker, and a producer that knows nothing of us."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.conftest import REDIS_URL, sandbox_env
from worker.bench_env import wait_until

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    return wait_until(predicate, timeout, interval)


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "callsync",
                   "--loglevel", "INFO", "--without-gossip", "--without-mingle", *args]
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        if not wait_for(lambda: " ready." in self.output() or self.process.poll() is not None,
                        timeout):
            raise AssertionError(f"worker not ready:\n{self.output()[-3000:]}")
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()


@pytest.fixture
def broker_url() -> str:
    """The real Redis, on a database of the tests' own, emptied first."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture
def producer(broker_url) -> Iterator[Callable[[dict], None]]:  # type: ignore[no-untyped-def]
    """Publishes exactly as the contract tells a producer to: no import of callsync."""
    app = Celery(broker=broker_url)

    def publish(event: dict) -> None:
        app.send_task("callsync.phone_call", args=[event], queue="callsync")

    yield publish
    app.close()


@pytest.fixture
def start_worker(simulators, broker_url, tmp_path):  # type: ignore[no-untyped-def]
    started: list[WorkerProcess] = []

    def start(database_url: str, *args: str, **env: str) -> WorkerProcess:
        full_env = sandbox_env(simulators, database_url, CELERY_BROKER_URL=broker_url,
                               SWEEP_INTERVAL_SECONDS="5")
        full_env.update(env)
        worker = WorkerProcess(full_env, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
