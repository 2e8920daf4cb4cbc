"""`callsync check`: is this deployment able to work? One line per dependency, OK or why not.

Each check is cheap and bounded by short timeouts; none writes anything that outlasts it (on
PostgreSQL the database check creates the journal's temporary function, as every worker
connection does, and it goes with the connection). Secrets never appear in a detail: the
broker URL is shown masked and remote messages are scrubbed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.adapters.http import ErrorKind, RemoteError
from worker.settings import BaseConfig, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

TIMEOUT = (5.0, 10.0)   # connect, read: a health check must answer quickly


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks() -> list[Check]:
    base = BaseConfig()
    settings: Settings | None = None
    try:
        settings = load_settings()
        results = [Check("settings", True, "valid")]
    except SettingsError as exc:
        results = [Check("settings", False, str(exc))]
    secrets = settings.secrets() if settings else ()

    def guarded(name: str, probe: Callable[[], str]) -> Check:
        try:
            return Check(name, True, probe())
        except Exception as exc:   # every failure becomes a line, never a traceback
            message = str(exc) or type(exc).__name__
            for secret in secrets:
                message = message.replace(secret, "***")
            return Check(name, False, message.splitlines()[0][:300])

    results.append(guarded("database", lambda: _database(base.database_url)))
    results.append(guarded("broker", lambda: _broker(base.celery_broker_url)))
    if settings is None:
        skipped = "skipped: settings are invalid"
        return [*results, Check("mappings", False, skipped), Check("oracle", False, skipped),
                Check("caliq", False, skipped)]
    results.append(guarded("mappings", lambda: _mappings(settings)))
    results.append(guarded("oracle", lambda: _oracle(settings)))
    results.append(guarded("caliq", lambda: _caliq(settings)))
    return results


def _database(url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from worker.adapters.db import is_migrated, is_sqlite

    args = {} if is_sqlite(url) else {"connect_timeout": int(TIMEOUT[0])}
    engine = create_engine(url, connect_args=args)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if not is_migrated(engine):
            raise RuntimeError(f"{shown}: reachable, but not migrated to the latest schema "
                               "(run `callsync db upgrade`)")
        if is_sqlite(url):
            return f"{shown}: reachable, schema up to date"
        _create_functions(engine, shown)
    finally:
        engine.dispose()
    return f"{shown}: reachable, schema up to date, the journal's temporary function created"


def _create_functions(engine: Engine, shown: str) -> None:
    """What every worker connection to PostgreSQL does first (see worker.adapters.db)."""
    from worker.adapters.repository import install_functions

    with engine.connect() as conn:
        try:
            install_functions(conn.connection.dbapi_connection, engine.dialect)
        except engine.dialect.loaded_dbapi.Error as exc:
            reason = str(exc).splitlines()[0]
            raise RuntimeError(
                f"{shown}: reachable, but the journal's temporary function cannot be created "
                f"({reason}); the workers' role needs the TEMP privilege on this database"
            ) from exc


def _broker(url: str) -> str:
    from kombu import Connection

    with Connection(url, connect_timeout=TIMEOUT[0]) as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT[0])
        return f"{conn.as_uri()}: reachable"


def _mappings(settings: Settings) -> str:
    from worker.mapping import load_mappings

    load_mappings(settings.callsync_mappings_dir, settings.mapping_settings())
    return f"{settings.callsync_mappings_dir}: valid"


def _explain(exc: RemoteError, what: str) -> RuntimeError:
    if exc.kind is ErrorKind.AUTH:
        return RuntimeError(f"{what}: credentials refused ({exc})")
    return RuntimeError(f"{what}: {exc}")


def _oracle(settings: Settings) -> str:
    from worker.bootstrap import oracle_client

    client = oracle_client(settings, timeout=TIMEOUT)
    try:
        client.check()
    except RemoteError as exc:
        raise _explain(exc, settings.oracle_api_root) from None
    auth = "Bearer token" if settings.oracle_token else f"user {settings.oracle_username}"
    return f"{settings.oracle_api_root}: interactions readable as {auth}"


def _caliq(settings: Settings) -> str:
    """Lists the channels (the documented Channel endpoint) and finds CALIQ_CHANNEL_ID there."""
    from worker.bootstrap import caliq_client

    client = caliq_client(settings, timeout=TIMEOUT)
    try:
        channels = client.channels()
    except RemoteError as exc:
        raise _explain(exc, settings.caliq_root) from None
    wanted = settings.caliq_channel_id
    if wanted not in channels:
        known = ", ".join(f"{k} {v}" for k, v in sorted(channels.items())) or "none"
        raise RuntimeError(f"{settings.caliq_root}: key accepted, but CALIQ_CHANNEL_ID={wanted} "
                           f"is not a channel (channels: {known})")
    return f"{settings.caliq_root}: key accepted, channel {wanted} ({channels[wanted]}) exists"
