"""The benchmark's isolated world: a claimed and flushed broker database, a fresh database, the
simulators in a process of their own, real `celery worker` processes, and an RSS sampler.

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
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

from worker.adapters.db import upgrade
from worker.adapters.models import CallRow
from worker.domain.plan import CallSync

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


# The run's claim on its broker database: taken and flushed in one atomic script, so that of two
# runs started together exactly one gets the database (a check of connected clients alone let
# both through: each can look before the other connects). Kept alive while the run lasts, so a
# run that died frees the database within CLAIM_TTL_MS.
CLAIM_KEY = "callsync-bench:claim"
CLAIM_TTL_MS = 60_000
_CLAIM_AND_FLUSH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@contextmanager
def claim_broker(url: str) -> Iterator[None]:
    """Hold the benchmark's own broker database for the run, emptied first; refuse one that is
    not clearly its own: another run's claim on it, or other clients connected to it."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.path.strip("/").isdigit():
        raise BenchError(f"--broker-url {url!r}: name a Redis database of the benchmark's own "
                         "(e.g. redis://127.0.0.1:6379/12); it is flushed first")
    db = int(parts.path.strip("/"))
    token = uuid.uuid4().hex
    _claim(url, db, token)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_claim, args=(url, token, stop), daemon=True,
                              name="broker-claim")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with suppress(redis.RedisError):  # if it cannot be released, it expires
            _run_script(url, _RELEASE, token)


def _claim(url: str, db: int, token: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        me = client.client_id()

        def others() -> list[dict[str, str]]:
            return [c for c in client.client_list() if int(c.get("db", -1)) == db
                    and int(c["id"]) != me]

        if client.exists(CLAIM_KEY):
            raise BenchError(f"Redis database {db} is in use by another benchmark run: give "
                             "this one a free database with --broker-url")
        # A run that just ended may still be closing its connections: give them a moment.
        if not wait_until(lambda: not others(), 15, interval=0.5):
            raise BenchError(f"Redis database {db} is in use ({len(others())} other clients "
                             "connected): give the benchmark a free one with --broker-url")
        if not client.eval(_CLAIM_AND_FLUSH, 1, CLAIM_KEY, token, CLAIM_TTL_MS):
            raise BenchError(f"Redis database {db} is in use by another benchmark run that "
                             "started at the same moment: give this one a free database with "
                             "--broker-url")
    except redis.RedisError as exc:
        raise BenchError(f"broker {url}: {exc}") from None
    finally:
        client.close()


def _keep_claim(url: str, token: str, stop: threading.Event) -> None:
    # A connection per renewal, closed at once: a held connection would look, to the client
    # check above, like a stranger using the database.
    while not stop.wait(CLAIM_TTL_MS / 4000):
        with suppress(redis.RedisError):  # the broker is down: the run's watch reports that
            _run_script(url, _EXTEND, token, CLAIM_TTL_MS)


def _run_script(url: str, script: str, *args: object) -> object:
    client = redis.Redis.from_url(url)
    try:
        return client.eval(script, 1, CLAIM_KEY, *args)
    finally:
        client.close()


@contextmanager
def fresh_database(database_url: str | None, prefix: str = "callsync_bench") -> Iterator[str]:
    """A migrated, empty database for one run: a temp SQLite file, or a new PostgreSQL database
    on the server `database_url` names (created here, dropped afterwards), named `prefix`_<hex>
    so that whoever looks at the server sees whose it is."""
    if database_url is None or database_url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="callsync-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield url
        return
    server = make_url(database_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
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


def synced_calls(engine: Engine) -> int:
    """How many calls the run's database holds as synced: what a run waits for and checks."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(CallRow)
                               .where(CallRow.sync_state == CallSync.SYNCED.value)) or 0)


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


def process_trees(pids: list[int]) -> list[psutil.Process]:
    """The processes and all their descendants (the prefork pool), those still there."""
    found: list[psutil.Process] = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
        except psutil.Error:
            continue
    return found


def tree_rss_mb(pids: list[int]) -> float:
    """Resident memory of the processes and all their children (the prefork pool), in MiB."""
    total = 0
    for proc in process_trees(pids):
        with suppress(psutil.Error):  # a child recycled between the listing and the read
            total += proc.memory_info().rss
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
