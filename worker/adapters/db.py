"""Engines and migrations for SQLite (the embedded default) and PostgreSQL (production).

SQLite has one writer: every transaction here begins with BEGIN IMMEDIATE, so two workers on one
file queue for the write lock instead of failing with "database is locked" halfway through a
read-then-write. They queue on an OS file lock next to the database (see WriterLockedConnection);
SQLite's busy timeout stays as the bound for any other writer. PostgreSQL's pool pings a
connection that has been idle a while before handing it out, so a server restarted while the
worker was quiet costs a reconnect, not an error (see _ping_when_idle).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

try:
    import fcntl
except ImportError:  # not on Windows: there SQLite's own busy handler does the queueing
    fcntl = None  # type: ignore[assignment]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 5.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


class WriterLockedConnection(sqlite3.Connection):
    """A pysqlite connection that holds an exclusive flock from BEGIN until COMMIT or ROLLBACK.

    SQLite's busy handler retries a locked database after sleeping 1, 2, 5, 10, 15... ms,
    while a callsync transaction holds the lock for well under a millisecond: py-spy showed
    two prefork children spending a fifth of their time asleep in BEGIN IMMEDIATE. A process
    blocked on flock wakes as soon as the holder lets go, and the kernel lets go for a holder
    that dies. One lock file per database, one open file per connection, so threads of one
    process queue on it too.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        name = os.fsdecode(database) if isinstance(database, str | bytes | os.PathLike) else ""
        in_memory = name in ("", ":memory:") or name.startswith("file:")
        self._lock_path = None if in_memory or fcntl is None else f"{name}-writer.lock"
        self._lock_fd: int | None = None
        self._locked = False

    def lock_writer(self) -> None:
        if self._lock_path is None or self._locked:
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._locked = True

    def unlock_writer(self) -> None:
        if self._locked and self._lock_fd is not None:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.unlock_writer()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.unlock_writer()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.unlock_writer()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """`pool_size`: connections kept open per process (opened on demand, never more)."""
    if is_sqlite(url):
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=0,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                          "factory": WriterLockedConnection},
        )
        _serialise_sqlite_writers(engine)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=0)
    _ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    _create_functions_on_connect(engine)
    return engine


def _create_functions_on_connect(engine: Engine) -> None:
    """The hot path's temporary functions (worker.adapters.pg_function) live as long as their
    connection: every new one creates them before the pool hands it out."""
    @event.listens_for(engine, "connect")
    def _create(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Imported here: the functions are the repository's SQL, which this module does not
        # otherwise know of.
        from worker.adapters.repository import install_functions

        install_functions(dbapi_connection, engine.dialect)


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection before use only when it sat idle for `idle_seconds` or more.

    A ping on every checkout (pool_pre_ping) was one round trip in twelve of an event, though
    a connection checked in a moment ago is nearly always alive. One that dies in that moment
    (the server restarted) fails its next task with a database error; the task is retried, as
    for any database error, and the pool is renewed when the error shows a disconnect. A dead
    connection found by the ping is replaced at once (DisconnectionError: the pool tries a new
    one, up to three times).
    """
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return   # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection is dead: {error}") from error


def _serialise_sqlite_writers(engine: Engine) -> None:
    # pysqlite's own BEGIN handling is deferred and late; take it over (SQLAlchemy's documented
    # recipe) so that every transaction takes the write lock up front.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        dbapi_connection = connection.connection.dbapi_connection
        dbapi_connection.lock_writer()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.unlock_writer()
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent: an up-to-date database is left alone)."""
    command.upgrade(alembic_config(url), revision)


def is_migrated(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return MigrationContext.configure(conn).get_current_revision() == head
