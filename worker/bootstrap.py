"""Builds the process-wide `Services` from settings: the one place that wires adapters together.

Built once per process: a prefork child builds its own engine and HTTP pool after the fork
instead of inheriting the parent's sockets. What holds no socket (the parsed mappings, the
database driver's modules) is prepared once in the worker's main process before it forks
(`preload`), so each child inherits it instead of paying for it on its first task.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from worker.adapters.caliq import CaliqClient
from worker.adapters.db import is_sqlite, make_engine, make_session_factory, upgrade
from worker.adapters.http import Limiter
from worker.adapters.oracle import OracleClient
from worker.adapters.ratelimit import build_limiter
from worker.mapping import Mappings, load_mappings
from worker.service import Services
from worker.settings import Settings, SettingsError, get_settings


def oracle_client(settings: Settings, *, timeout: tuple[float, float] | None = None,
                  limiter: Limiter | None = None) -> OracleClient:
    return OracleClient(
        settings.oracle_api_root,
        username=settings.oracle_username,
        password=settings.oracle_password.get_secret_value() if settings.oracle_password else None,
        token=settings.oracle_token.get_secret_value() if settings.oracle_token else None,
        framework_version=settings.oracle_rest_framework_version,
        timeout=timeout or (settings.http_connect_timeout, settings.http_read_timeout),
        limiter=limiter, pool_size=settings.connection_pool_size,
    )


def caliq_client(settings: Settings, *, timeout: tuple[float, float] | None = None,
                 limiter: Limiter | None = None) -> CaliqClient:
    return CaliqClient(
        settings.caliq_root,
        api_key=settings.caliq_api_key.get_secret_value(),
        duplicate_pattern=settings.caliq_duplicate_pattern,
        timeout=timeout or (settings.http_connect_timeout, settings.http_read_timeout),
        limiter=limiter, pool_size=settings.connection_pool_size,
    )


def build_services(settings: Settings, mappings: Mappings | None = None) -> Services:
    limits_url = rate_limit_url(settings)
    oracle = oracle_client(settings, limiter=build_limiter(
        limits_url, "oracle", settings.oracle_rate_limit_per_second))
    caliq = caliq_client(settings, limiter=build_limiter(
        limits_url, "caliq", settings.caliq_rate_limit_per_second))
    return Services(
        sessions=make_session_factory(make_engine(settings.database_url,
                                                  pool_size=settings.connection_pool_size)),
        oracle=oracle,
        caliq=caliq,
        mappings=(mappings if mappings is not None
                  else load_mappings(settings.callsync_mappings_dir, settings.mapping_settings())),
        lease=timedelta(seconds=settings.lease_seconds),
        retry_backoff_max=settings.retry_backoff_max_seconds,
        retry_max_attempts=settings.retry_max_attempts,
        redelivery_cap=settings.redelivery_cap,
        secrets=settings.secrets(),
    )


def rate_limit_url(settings: Settings) -> str | None:
    """Where the shared rate limits live: their own setting, else the broker when it is Redis."""
    if settings.rate_limit_redis_url:
        return settings.rate_limit_redis_url
    broker = settings.celery_broker_url
    return broker if broker.startswith(("redis://", "rediss://", "unix://")) else None


def prepare_database(database_url: str) -> None:
    """The embedded SQLite upgrades itself; PostgreSQL is upgraded by `callsync db upgrade`."""
    if is_sqlite(database_url):
        upgrade(database_url)


class _Process:
    """What this process has built: its services, and the mappings its parent preloaded."""

    lock = threading.Lock()
    services: Services | None = None
    mappings: Mappings | None = None


def preload(settings: Settings) -> Mappings:
    """Validate and keep the mappings, and import the database driver: a worker's main process
    does it before the fork, which measured about 250 ms of CPU on each child's first task.
    Raises MappingError for a bad mapping file, SettingsError for a database it cannot load."""
    mappings = load_mappings(settings.callsync_mappings_dir, settings.mapping_settings())
    import_database_driver(settings.database_url)
    _Process.mappings = mappings
    return mappings


def import_database_driver(database_url: str) -> None:
    """Import the URL's DBAPI module. Raises SettingsError naming the URL's scheme, never the
    URL itself (it may hold a password)."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise SettingsError("DATABASE_URL: not a database URL "
                            "(dialect+driver://user@host/database)") from None
    try:
        url.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError) as exc:
        raise SettingsError(f"DATABASE_URL: no driver for {url.drivername!r} ({exc})") from None


def get_services() -> Services:
    """This process's services, built on first use. Under a lock: a threads pool's first tasks
    arrive together, and they must share one engine and one HTTP pool, not build one each."""
    services = _Process.services
    if services is None:
        with _Process.lock:
            services = _Process.services
            if services is None:
                services = _Process.services = build_services(get_settings(), _Process.mappings)
    return services


def reset_services() -> None:
    """Forget what this process built and preloaded (the demo and tests change settings)."""
    with _Process.lock:
        _Process.services = None
        _Process.mappings = None
