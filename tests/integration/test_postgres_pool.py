"""PostgreSQL's pool: a connection idle a while is pinged before use, one just used is not."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from tests.postgres import backend_pid, kill_backend
from worker.adapters import db

pytestmark = pytest.mark.postgres


def test_an_idle_connection_whose_server_side_died_is_replaced_without_an_error(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)   # every checkout counts as idle
    engine = db.make_engine(postgres_url, pool_size=1)
    try:
        dead = backend_pid(engine)
        kill_backend(postgres_url, dead)
        assert backend_pid(engine) != dead   # the ping found it dead; a new one served
    finally:
        engine.dispose()


def test_a_connection_in_use_a_moment_ago_is_not_pinged(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The price of skipping the ping: a connection that died within the idle window fails
    # its next use (the task is retried); the pool is renewed, and the use after that works.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = db.make_engine(postgres_url, pool_size=1)
    try:
        dead = backend_pid(engine)
        kill_backend(postgres_url, dead)
        with pytest.raises(OperationalError):
            backend_pid(engine)
        assert backend_pid(engine) != dead
    finally:
        engine.dispose()
