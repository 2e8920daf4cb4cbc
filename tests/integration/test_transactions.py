"""Services.statements and Services.atomic: the hot path's transaction boundaries, on both
databases. On PostgreSQL a statement inside `statements` is a transaction by itself (no BEGIN
or COMMIT round trip) and `atomic` groups those that must commit together; on SQLite both are
one transaction, whose BEGIN IMMEDIATE takes the writer lock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError

from tests.factories import call_events
from worker.adapters import repository as repo
from worker.adapters.models import ThreadRow
from worker.service import handle_event, utcnow


def owner_seen_elsewhere(url: str, thread_key: str) -> str | None:
    """The thread's lease owner as another connection sees it: what has been committed."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(ThreadRow.lease_owner)
                               .where(ThreadRow.thread_key == thread_key))
    finally:
        engine.dispose()


def claim(svc, s, thread_key: str, owner: str) -> repo.Claim:  # type: ignore[no-untyped-def]
    found = repo.claim_thread(s, thread_key, owner, utcnow(), timedelta(seconds=60))
    assert found is not None
    return found


def test_a_statement_commits_by_itself_only_on_postgresql(make_services, simulators,
                                                          database_url):
    svc = make_services()
    handle_event(svc, call_events("alone")[1])   # IN_PROCESS: a thread, its lease given back
    with svc.statements() as s:
        claim(svc, s, "alone", "me")
        seen = owner_seen_elsewhere(database_url, "alone")
    assert seen == ("me" if svc.engine.dialect.name == "postgresql" else None)
    assert owner_seen_elsewhere(database_url, "alone") == "me"   # committed at the end anyway


def test_an_error_undoes_what_atomic_grouped(make_services, simulators, database_url):
    svc = make_services()
    handle_event(svc, call_events("group")[1])
    with pytest.raises(RuntimeError), svc.statements() as s, svc.atomic(s):
        held = claim(svc, s, "group", "me")
        repo.release_thread(s, held, held.version)
        claim(svc, s, "group", "again")
        raise RuntimeError("before the group commits")
    assert owner_seen_elsewhere(database_url, "group") is None
    with svc.statements() as s:   # the connection is back out of its transaction, and usable
        claim(svc, s, "group", "after")
    assert owner_seen_elsewhere(database_url, "group") == "after"


def test_an_error_after_the_claim_gives_the_thread_back(make_services, simulators,
                                                        monkeypatch):
    """On PostgreSQL the journal and the claim commit before the thread is read: a read that
    fails must not leave the thread busy, or the event's retry would find it so and leave its
    work to a lease that nobody holds, until it expires."""
    svc = make_services()
    new, in_process, _ = call_events("giveback")
    handle_event(svc, new)
    load = repo.load_thread

    def fail_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(repo, "load_thread", load)
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(repo, "load_thread", fail_once)
    with pytest.raises(OperationalError):
        handle_event(svc, in_process)
    with svc.transaction() as s:
        assert s.scalar(select(ThreadRow.lease_owner)
                        .where(ThreadRow.thread_key == "giveback")) is None
    received, driven = handle_event(svc, in_process)   # the task's retry
    assert driven is not None and not driven.busy
    assert received.outcome in ("accepted", "duplicate")



def test_statements_inside_a_transaction_join_it(make_services, simulators, database_url):
    svc = make_services()
    handle_event(svc, call_events("joined")[1])
    with pytest.raises(RuntimeError), svc.one_connection(), svc.connection_transaction() as s:
        with svc.statements() as inner:
            assert inner is s
            claim(svc, inner, "joined", "me")
        raise RuntimeError("the outer transaction rolls back")
    assert owner_seen_elsewhere(database_url, "joined") is None
