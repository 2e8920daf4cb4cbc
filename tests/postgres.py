"""PostgreSQL helpers for tests that lose a connection on purpose."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text


def kill_backend(admin_url: str, pid: int) -> None:
    """End one server process, as a server restart or a network cut would."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}) is True
    admin.dispose()


def backend_pid(engine: Engine) -> int:
    """The server process behind the connection the pool hands out next."""
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_backend_pid()")))
