"""Services.statements: the hot path's transaction boundaries, on both databases. On
PostgreSQL a statement inside `statements` is a transaction by itself (no BEGIN or COMMIT
round trip), and what must commit together is one statement, a function of several; on
SQLite they are one transaction, whose BEGIN IMMEDIATE takes the writer lock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError

from tests.factories import call_events, thread_events
from worker.adapters import repository as repo
from worker.adapters.models import CallRow, ThreadRow
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


def test_an_error_after_the_claim_gives_the_thread_back(make_services, simulators,
                                                        monkeypatch):
    """On PostgreSQL the journal and the claim commit before the thread is released: a
    release that fails must not leave the thread busy, or the event's retry would find it so
    and leave its work to a lease that nobody holds, until it expires."""
    svc = make_services()
    new = call_events("giveback")[0]
    handle_event(svc, new)   # the call's interaction; again below, a duplicate: nothing to do
    release = repo.release_or_read_again

    def fail_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(repo, "release_or_read_again", release)
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(repo, "release_or_read_again", fail_once)
    with pytest.raises(OperationalError):
        handle_event(svc, new)
    with svc.transaction() as s:
        assert s.scalar(select(ThreadRow.lease_owner)
                        .where(ThreadRow.thread_key == "giveback")) is None
    received, driven = handle_event(svc, new)   # the task's retry
    assert driven is not None and not driven.busy
    assert received.outcome == "duplicate"


def test_statements_inside_a_transaction_join_it(make_services, simulators, database_url):
    svc = make_services()
    handle_event(svc, call_events("joined")[1])
    with pytest.raises(RuntimeError), svc.one_connection(), svc.connection_transaction() as s:
        with svc.statements() as inner:
            assert inner is s
            claim(svc, inner, "joined", "me")
        raise RuntimeError("the outer transaction rolls back")
    assert owner_seen_elsewhere(database_url, "joined") is None


def lease_of(svc, thread_key: str):  # type: ignore[no-untyped-def]
    """The thread's lease owner and expiry, as committed."""
    with svc.transaction() as s:
        return tuple(s.execute(select(ThreadRow.lease_owner, ThreadRow.lease_expires_at)
                               .where(ThreadRow.thread_key == thread_key)).one())


def test_a_refused_release_renews_the_lease_and_reads_the_thread_again(make_services,
                                                                       simulators):
    """An event that arrives while its thread is held moves the thread's version, so the
    holder's release is refused: the holder keeps the lease and looks at the thread as it is
    now. On PostgreSQL that renewal and read ride in the release's own round trip, alone or
    after a batch of steps' results (under a burst, a third of the events met a refused
    release, and those were three round trips more each)."""
    from sqlalchemy import event as sa_event

    svc = make_services()
    root = call_events("again", thread_id="again")
    consult = call_events("again-c1", thread_id="again", parent_id="again")
    handle_event(svc, root[0])   # the thread, its top-level created, the lease given back
    sent: list[str] = []
    sa_event.listen(svc.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    one_trip = svc.engine.dialect.name == "postgresql"
    lease = timedelta(seconds=60)

    def refused_alone(owner: str, arriving: dict) -> tuple[repo.Claim, repo.Release]:  # type: ignore[type-arg]
        with svc.statements() as s:
            held = claim(svc, s, "again", owner)
            read = repo.load_thread(s, "again")
        assert handle_event(svc, arriving)[1].busy   # journaled; the thread is held
        sent.clear()
        with svc.statements() as s:
            found = repo.release_or_read_again(s, read, held, held.version, now, lease)
        return held, found

    now = utcnow()
    held, found = refused_alone("holder", consult[0])
    assert len(sent) == 1 or not one_trip, sent
    assert not found.released and found.thread is not None
    with svc.statements() as s:
        assert found.thread == repo.load_thread(s, "again")
        assert found.version == repo.thread_version(s, "again")
    assert set(found.thread.calls) == {"again", "again-c1"}
    assert lease_of(svc, "again") == ("holder", now + lease)   # kept, and renewed

    with svc.statements() as s:   # nothing arrived since this read: given back
        given_back = repo.release_or_read_again(s, found.thread, held, found.version, now, lease)
    assert given_back == repo.Release(True) and lease_of(svc, "again") == (None, None)

    # After a batch of steps' results, the same in the same call.
    with svc.statements() as s:
        held = claim(svc, s, "again", "batch")
        read = repo.load_thread(s, "again")
    assert handle_event(svc, consult[1])[1].busy
    sent.clear()
    with svc.statements() as s:
        _, found = repo.save_step_and_release(
            s, read, read.calls["again-c1"], {}, [], now=now, lease=lease,
            top_level_changed=False, release=held, version=held.version)
    assert len(sent) == 1 or not one_trip, sent
    assert not found.released and found.thread is not None
    assert found.thread.calls["again-c1"].status.name == "IN_PROCESS"
    assert lease_of(svc, "again") == ("batch", now + lease)

    # A lease that expired and was taken over is lost: nothing is renewed or read.
    with svc.statements() as s:
        assert repo.claim_thread(s, "again", "heir", now + 2 * lease, lease) is not None
        lost = repo.release_or_read_again(s, found.thread, held, found.version, now, lease)
    assert lost == repo.Release(False) and lease_of(svc, "again")[0] == "heir"


def _rows(svc, prefix: str):  # type: ignore[no-untyped-def]
    """What a run left, without what differs between two runs (ids, times, request ids)."""
    from worker.adapters.models import CallRow, LegRow, RequestRow

    def strip(row):  # type: ignore[no-untyped-def]
        return tuple(v.replace(prefix, "", 1) if isinstance(v, str) else v for v in row)

    with svc.transaction() as s:
        legs = s.execute(select(LegRow.interaction_id, LegRow.leg, LegRow.state,
                                LegRow.attempts, LegRow.error_kind,
                                LegRow.next_attempt_at.is_(None),
                                LegRow.request_id.is_(None))
                         .where(LegRow.interaction_id.startswith(prefix))).all()
        calls = s.execute(select(CallRow.interaction_id, CallRow.status, CallRow.sync_state)
                          .where(CallRow.interaction_id.startswith(prefix))).all()
        threads = s.execute(select(ThreadRow.thread_key, ThreadRow.lease_owner,
                                   ThreadRow.top_level_call_id,
                                   ThreadRow.top_level_interaction_id.is_(None))
                            .where(ThreadRow.thread_key.startswith(prefix))).all()
        requests = s.execute(select(RequestRow.interaction_id, RequestRow.leg, RequestRow.crm,
                                    RequestRow.method, RequestRow.status_code)
                             .where(RequestRow.interaction_id.startswith(prefix))).all()
    return sorted(strip(r) for r in legs), sorted(strip(r) for r in calls), \
        sorted(strip(r) for r in threads), sorted(strip(r) for r in requests)


def test_a_batchs_results_are_written_alike_by_the_function_and_the_statements(
        make_services, simulators, monkeypatch):
    """PostgreSQL saves a batch of steps and its release with one function call
    (worker.adapters.pg_step); SQLite with the statements. On PostgreSQL both ways, the same
    events, one of them failing once with a 503 (a retry: an error, its kind, a back-off
    time), must leave the same rows."""
    from tests.integration.test_faults import settle
    from worker.sandbox.admin import SimulatorAdmin

    svc = make_services()
    sql = repo._statements_for(svc.engine.dialect)
    if sql.save_results is None:
        pytest.skip("the function is PostgreSQL's")

    def run(prefix: str) -> tuple[list, ...]:  # type: ignore[type-arg]
        svc.clock = utcnow   # settle() moves it on
        SimulatorAdmin(simulators.oracle_url).set_faults(
            [{"method": "POST", "path": r"/phoneCalls$", "action": "503", "times": 1}])
        events = thread_events(prefix, consults=2)
        for raw in [*events, events[0]]:   # and a duplicate
            handle_event(svc, raw)
        retrying = _rows(svc, prefix)
        settle(svc, [prefix], rounds=2)
        return (*retrying, *_rows(svc, prefix))

    by_function = run("fn")
    with monkeypatch.context() as patched:
        patched.setattr(sql, "save_results", None)
        by_statements = run("st")
    assert by_function == by_statements
    legs_retrying, legs_done = by_function[0], by_function[4]
    assert any(row[2] == "retry" and row[4] == "transient" and not row[5]
               for row in legs_retrying)
    assert {row[2] for row in legs_done} == {"done"}
    assert {row[2] for row in by_function[5]} == {"synced"}   # the calls, at the end


HOT_TABLES = ("threads", "calls", "call_legs", "journal", "requests")


def _whole_table_reads(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How often each of the hot path's tables was read whole (a sequential scan), with this
    backend's own counts flushed first."""
    from sqlalchemy import text

    conn.execute(text("SELECT pg_stat_force_next_flush()"))
    conn.commit()   # the flush happens as the backend goes idle
    conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    rows = conn.execute(text("SELECT relname, seq_scan FROM pg_stat_user_tables "
                             "WHERE relname = ANY(:tables)"), {"tables": list(HOT_TABLES)})
    return {name: int(count) for name, count in rows}


@pytest.mark.postgres
def test_the_hot_path_reads_no_table_whole_on_postgresql(simulators) -> None:
    """Each statement of an event finds its rows by an index, however young the database: the
    calls' sync states, saved by a join on the rows the function is given, were planned as a
    hash of the whole `calls` table, and that plan was kept for the connection's life, so the
    cost of every release grew with the table. A fresh database, as a new deployment or the
    benchmark has, is where the planner's guesses are the least informed."""
    from tests.conftest import PG_ADMIN_URL, sandbox_services
    from worker.bench_env import fresh_database

    with fresh_database(PG_ADMIN_URL, prefix="callsync_test") as url:
        # One connection, so that the counts read on it are those of every statement.
        svc = sandbox_services(simulators, url, connection_pool_size=1)
        try:
            with svc.engine.connect() as conn:
                before = _whole_table_reads(conn)
            for n in range(4):   # threads of one to three calls, every event applied
                for raw in thread_events(f"scan{n}", consults=n % 3):
                    handle_event(svc, raw)
            with svc.engine.connect() as conn:
                after = _whole_table_reads(conn)
            with svc.transaction() as s:   # a whole-table read itself, so after the counts
                synced = {state for (state,) in s.execute(select(CallRow.sync_state))}
        finally:
            svc.engine.dispose()
    assert synced == {"synced"}
    assert set(before) == set(HOT_TABLES)
    assert {t: after[t] - before[t] for t in HOT_TABLES} == {t: 0 for t in HOT_TABLES}
