"""PostgreSQL's pool: a connection idle a while is pinged before use, one just used is not."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from worker.adapters import db

pytestmark = pytest.mark.postgres


def _kill_backend(admin_url: str, pid: int) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}) is True
    admin.dispose()


def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_backend_pid()")))


def test_an_idle_connection_whose_server_side_died_is_replaced_without_an_error(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)   # every checkout counts as idle
    engine = db.make_engine(postgres_url, pool_size=1)
    try:
        dead = _backend_pid(engine)
        _kill_backend(postgres_url, dead)
        assert _backend_pid(engine) != dead   # the ping found it dead; a new one served
    finally:
        engine.dispose()


def test_a_connection_in_use_a_moment_ago_is_not_pinged(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The price of skipping the ping: a connection that died within the idle window fails
    # its next use (the task is retried); the pool is renewed, and the use after that works.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = db.make_engine(postgres_url, pool_size=1)
    try:
        dead = _backend_pid(engine)
        _kill_backend(postgres_url, dead)
        with pytest.raises(OperationalError):
            _backend_pid(engine)
        assert _backend_pid(engine) != dead
    finally:
        engine.dispose()
