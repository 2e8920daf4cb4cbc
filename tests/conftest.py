"""Shared fixtures: real databases (SQLite file, PostgreSQL server) and the CRM simulators."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get(
    "CALLSYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CALLSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
RABBITMQ_URL = os.environ.get("CALLSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TABLES = ("requests", "journal", "call_legs", "calls", "threads", "deliveries")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, dropped at the end of the session."""
    from worker.bench_env import fresh_database

    with fresh_database(PG_ADMIN_URL, prefix="callsync_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Each test that takes this runs on both databases, each starting empty."""
    if request.param == "sqlite":
        from worker.adapters.db import upgrade

        url = f"sqlite:///{tmp_path / 'callsync.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def simulators_session():  # type: ignore[no-untyped-def]
    from worker.sandbox.server import Simulators

    with Simulators() as sims:
        yield sims


@pytest.fixture
def simulators(simulators_session):  # type: ignore[no-untyped-def]
    """Both CRM simulators over real HTTP, emptied (records, request log, faults) per test."""
    from worker.sandbox.admin import SimulatorAdmin

    for url in (simulators_session.oracle_url, simulators_session.caliq_url):
        SimulatorAdmin(url).reset()
    return simulators_session


def sandbox_env(sims, database_url: str, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment a worker needs to talk to the simulators."""
    return {
        "DATABASE_URL": database_url,
        "ORACLE_BASE_URL": sims.oracle_url,
        "ORACLE_USERNAME": "sandbox",
        "ORACLE_PASSWORD": "sandbox-password",
        "ORACLE_PHONE_CHANNEL_ID": "100100052667990",
        "CALIQ_BASE_URL": sims.caliq_url,
        "CALIQ_API_KEY": "sandbox-key",
        "CALIQ_CHANNEL_ID": "1",
        **extra,
    }


def sandbox_services(sims, database_url: str, **overrides: object):  # type: ignore[no-untyped-def]
    """Services wired to the simulators and `database_url`, as a worker builds them."""
    from worker.bootstrap import build_services
    from worker.settings import load_settings

    env = {k.lower(): v for k, v in sandbox_env(sims, database_url).items()}
    return build_services(load_settings(**{**env, **overrides}))


@pytest.fixture
def make_services(simulators, database_url):  # type: ignore[no-untyped-def]
    """Services wired to the simulators and the database under test, as a worker builds them."""
    built = []

    def factory(**overrides: object):  # type: ignore[no-untyped-def]
        svc = sandbox_services(simulators, database_url, **overrides)
        built.append(svc)
        return svc

    yield factory
    for svc in built:
        svc.sessions.kw["bind"].dispose()
