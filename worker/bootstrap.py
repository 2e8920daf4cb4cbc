"""Builds the process-wide `Services` from settings: the one place that wires adapters together.

Built lazily, once per process: a prefork child builds its own engine and HTTP pool after the fork
instead of inheriting the parent's sockets.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from worker.adapters.caliq import CaliqClient
from worker.adapters.db import is_sqlite, make_engine, make_session_factory, upgrade
from worker.adapters.http import Limiter
from worker.adapters.oracle import OracleClient
from worker.adapters.ratelimit import build_limiter
from worker.mapping import load_mappings
from worker.service import Services
from worker.settings import Settings, get_settings


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


def build_services(settings: Settings) -> Services:
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
        mappings=load_mappings(settings.callsync_mappings_dir, settings.mapping_settings()),
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


@lru_cache(maxsize=1)
def get_services() -> Services:
    return build_services(get_settings())
