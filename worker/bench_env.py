"""The benchmark's isolated world: a flushed broker database, a fresh database, the simulators in
a process of their own, real `celery worker` processes, and an RSS sampler.

Nothing here touches production data: the broker is a Redis database of the benchmark's own
(flushed first), the database is a temporary SQLite file or a PostgreSQL database created for
the run and dropped after it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from worker.adapters.db import upgrade

REPO = Path(__file__).resolve().parent.parent
SANDBOX_CREDENTIALS = {
    "ORACLE_USERNAME": "sandbox",
    "ORACLE_PASSWORD": "sandbox-password",
    "CALIQ_API_KEY": "sandbox-key",
    "CALIQ_CHANNEL_ID": "1",
    "ORACLE_PHONE_CHANNEL_ID": "100100052667990",
}


class BenchError(RuntimeError):
    """The benchmark could not run, or its result is not complete: nothing is reported."""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flush_broker(url: str) -> None:
    """Empty the benchmark's own broker database; refuse one that is not clearly its own."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.path.strip("/").isdigit():
        raise BenchError(f"--broker-url {url!r}: name a Redis database of the benchmark's own "
                         "(e.g. redis://127.0.0.1:6379/12); it is flushed first")
    db = int(parts.path.strip("/"))
    client = redis.Redis.from_url(url)
    try:
        me = client.client_id()

        def others() -> list[dict[str, str]]:
            return [c for c in client.client_list() if int(c.get("db", -1)) == db
                    and int(c["id"]) != me]

        # A run that just ended may still be closing its connections: give them a moment.
        if not wait_until(lambda: not others(), 15, interval=0.5):
            raise BenchError(f"Redis database {db} is in use ({len(others())} other clients "
                             "connected): give the benchmark a free one with --broker-url")
        client.flushdb()
    except redis.RedisError as exc:
        raise BenchError(f"broker {url}: {exc}") from None
    finally:
        client.close()


@contextmanager
def fresh_database(database_url: str | None) -> Iterator[str]:
    """A migrated, empty database for one run: a temp SQLite file, or a new PostgreSQL database
    on the server `database_url` names (created here, dropped afterwards)."""
    if database_url is None or database_url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="callsync-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield url
        return
    server = make_url(database_url)
    name = f"callsync_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class SimulatorProcess:
    """Both CRM simulators in a process of their own, so the benchmark's GIL is not theirs."""

    latency_ms: float
    oracle_port: int = field(default_factory=free_port)
    caliq_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def oracle_url(self) -> str:
        return f"http://127.0.0.1:{self.oracle_port}"

    @property
    def caliq_url(self) -> str:
        return f"http://127.0.0.1:{self.caliq_port}"

    def start(self) -> SimulatorProcess:
        from worker.sandbox.admin import SimulatorAdmin

        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.sandbox.server", "--oracle-port", str(self.oracle_port),
             "--caliq-port", str(self.caliq_port), "--latency-ms", str(self.latency_ms)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                SimulatorAdmin(self.oracle_url, timeout=1).state()
                SimulatorAdmin(self.caliq_url, timeout=1).state()
                return True
            except OSError:
                return False

        if not wait_until(up, 20):
            self.stop()
            raise BenchError("the simulators did not start")
        return self

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)


@dataclass
class WorkerFleet:
    """`celery worker` processes on the benchmark's broker, each named so a ping can find it."""

    env: dict[str, str]
    count: int
    pool: str
    concurrency: int
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> WorkerFleet:
        run = uuid.uuid4().hex[:6]
        for n in range(self.count):
            name = f"bench{n}-{run}@{socket.gethostname()}"
            log = open(self.log_dir / f"worker-{n}.log", "ab")  # noqa: SIM115 - process-long
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "callsync",
                 "-n", name, "--pool", self.pool, "--concurrency", str(self.concurrency),
                 "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                cwd=REPO, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
            log.close()
            self.names.append(name)
        if not wait_until(self._all_answer, timeout, interval=0.5):
            tail = self.logs()[-3000:]
            self.stop()
            raise BenchError(f"workers not ready after {timeout:.0f}s:\n{tail}")
        return self

    def _all_answer(self) -> bool:
        from celery import Celery

        if any(p.poll() is not None for p in self.processes):
            raise BenchError(f"a worker exited:\n{self.logs()[-3000:]}")
        app = Celery(broker=self.env["CELERY_BROKER_URL"])
        try:
            replies = app.control.ping(destination=self.names, timeout=1.0)
        finally:
            app.close()
        return len({name for reply in replies for name in reply}) == len(self.names)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def logs(self) -> str:
        return "".join((self.log_dir / f"worker-{n}.log").read_text(errors="replace")
                       for n in range(self.count))

    def stop(self) -> None:
        for process in self.processes:
            _terminate(process)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tree_rss_mb(pids: list[int]) -> float:
    """Resident memory of the processes and all their children (the prefork pool), in MiB."""
    total = 0
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            for proc in [parent, *parent.children(recursive=True)]:
                total += proc.memory_info().rss
        except psutil.Error:
            continue  # a child recycled between the listing and the read
    return total / 2**20


@dataclass
class Sampler:
    """Samples (seconds, progress, RSS MiB) every `interval` from a daemon thread."""

    pids: list[int]
    progress: Callable[[], int]
    interval: float = 0.5
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            self.sample(time.monotonic() - started)
            self._stop.wait(self.interval)

    def sample(self, at: float) -> None:
        try:
            done = self.progress()
        except Exception:  # a poll that failed is a missing sample, not a failed run
            return
        self.samples.append((at, done, tree_rss_mb(self.pids)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
