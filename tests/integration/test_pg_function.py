"""The journal's statements as one PL/pgSQL function on a real PostgreSQL server: every new
connection has it, and it answers and writes exactly as the statements sent one by one."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Boolean, Integer, bindparam, exc, select, update

from tests.factories import call_events, thread_events
from tests.postgres import backend_pid, kill_backend
from worker.adapters import db
from worker.adapters import repository as repo
from worker.adapters.models import CallRow, JournalRow, ThreadRow
from worker.adapters.pg_function import Part, PgFunction, Then
from worker.domain.events import validate_event
from worker.service import utcnow

pytestmark = pytest.mark.postgres
LEASE = timedelta(seconds=60)


@pytest.fixture
def engine(postgres_url: str):  # type: ignore[no-untyped-def]
    engine = db.make_engine(postgres_url, pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def run() -> str:
    """A prefix of this test's own for its calls and threads (the database is shared)."""
    return uuid.uuid4().hex[:8]


def _journal(engine, events, owner: str, keep: bool = False) -> list[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    """Each event's outcome, thread and whether `owner` got the lease (given back after each,
    unless `keep`)."""
    answers = []
    for raw in events:
        with engine.begin() as conn:
            outcome, thread_key, claim, _ = repo.accept_event(
                conn, validate_event(raw), payload=json.dumps(raw), source="test", task_id=None,
                now=utcnow(), owner=owner, lease=LEASE)
            answers.append((outcome, thread_key, claim is not None))
            if claim is not None and not keep:
                repo.abandon_lease(conn, claim)
    return answers


def _stored(engine, prefix: str):  # type: ignore[no-untyped-def]
    """The rows of the calls and threads named `prefix`..., with the prefix taken out."""
    with engine.connect() as conn:
        threads = conn.execute(select(ThreadRow.thread_key, ThreadRow.version,
                                      ThreadRow.lease_owner).where(
            ThreadRow.thread_key.startswith(prefix)).order_by(ThreadRow.thread_key)).all()
        calls = conn.execute(select(CallRow.interaction_id, CallRow.thread_key, CallRow.status,
                                    CallRow.sync_state).where(
            CallRow.interaction_id.startswith(prefix)).order_by(CallRow.interaction_id)).all()
        journal = conn.execute(select(JournalRow.thread_key, JournalRow.status,
                                      JournalRow.outcome).where(
            JournalRow.interaction_id.startswith(prefix)).order_by(JournalRow.id)).all()
    return [tuple(v.replace(prefix, "", 1) if isinstance(v, str) else v for v in row)
            for rows in (threads, calls, journal) for row in rows]


def test_the_function_answers_and_writes_as_the_statements_one_by_one(
        engine, run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sql = repo._statements_for(engine.dialect)
    assert sql.accept is not None

    def events(prefix: str) -> list[dict]:  # type: ignore[type-arg]
        thread = thread_events(prefix, consults=1)
        new, in_process, stopped = call_events(f"{prefix}-late", thread_id=prefix)
        # a duplicate, a stale event and a call joining a thread it did not name
        return [*thread, thread[0], stopped, in_process, new,
                {**call_events(f"{prefix}-c1")[2], "thread_id": f"{prefix}-other"}]

    def journal(prefix: str) -> list[tuple[str, str, bool]]:
        answers = _journal(engine, events(prefix), owner="w")
        # and while another worker holds the thread's lease: the event is left to it
        answers += _journal(engine, call_events(f"{prefix}-busy", thread_id=prefix)[:1],
                            owner="holder", keep=True)
        return answers + _journal(engine, call_events(f"{prefix}-busy", thread_id=prefix)[1:2],
                                  owner="w")

    function, statements = f"fn{run}", f"st{run}"
    by_function = journal(function)
    with monkeypatch.context() as patched:
        patched.setattr(sql, "accept", None)   # the three statements, as on SQLite
        by_statements = journal(statements)
    assert [(o, t.replace(function, statements, 1), c)
            for o, t, c in by_function] == by_statements
    assert {o for o, _, _ in by_function} == {"accepted", "duplicate", "stale"}
    assert by_function[-1] == ("accepted", function, False)
    assert _stored(engine, function) == _stored(engine, statements)


def test_a_connection_made_after_one_was_lost_has_the_function(
        engine, run: str, postgres_url: str) -> None:
    assert _journal(engine, call_events(f"before{run}")[:1], owner="w")[0][0] == "accepted"
    kill_backend(postgres_url, backend_pid(engine))
    with pytest.raises(exc.OperationalError) as lost:   # the task is retried
        _journal(engine, call_events(f"lost{run}")[:1], owner="w")
    assert lost.value.connection_invalidated
    assert _journal(engine, call_events(f"after{run}")[:1], owner="w")[0][0] == "accepted"


def test_a_statement_that_returns_no_row_fails_the_call_and_its_transaction(
        engine, run: str) -> None:
    """INTO STRICT: exactly one row, as the statements' callers ask with `.one()`."""
    threads_t = ThreadRow.__table__
    bump = update(threads_t).where(threads_t.c.thread_key == bindparam("key")).values(
        version=threads_t.c.version + 1).returning(threads_t.c.version)
    function = PgFunction("callsync_test_bump", [Part(bump, into=("version",))], engine.dialect)
    _journal(engine, call_events(f"strict{run}")[:1], owner="w")
    with engine.connect() as conn:
        function.install(conn.connection.dbapi_connection)
        with conn.begin():
            assert function.run(conn, {"key": f"strict{run}"}).version == 2
        with pytest.raises(exc.DBAPIError, match="query returned no rows"), conn.begin():
            function.run(conn, {"key": "no such thread"})


def test_check_names_a_role_that_cannot_create_the_function(postgres_url: str, run: str) -> None:
    """`callsync check` creates the function as a worker's connection does, and says what a
    role without the TEMP privilege lacks (the workers would fail every task otherwise)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from worker.commands.health import _database

    assert _database(postgres_url).endswith("the journal's temporary function created")
    server = make_url(postgres_url)
    name = f"callsync_notemp_{run}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC'))
    try:
        db.upgrade(server.set(database=name).render_as_string(hide_password=False))
        owner = create_engine(server.set(database=name))
        with owner.begin() as conn:
            conn.execute(text(f'GRANT SELECT ON alembic_version TO "{name}"'))
        owner.dispose()
        as_role = server.set(database=name, username=name).render_as_string(hide_password=False)
        with pytest.raises(RuntimeError, match="the workers' role needs the TEMP privilege") as no:
            _database(as_role)
        assert "permission denied to create temporary tables" in str(no.value)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_journal_reads_the_thread_it_claims_as_load_thread_does(
        make_services, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's function ends with the read of the thread it claimed, in the same round
    trip, and it is the read load_thread makes: events, sync states, legs and top-level. A
    fresh claim (the thread holds only its event) reads nothing, and the drive reads nothing
    more."""
    from worker.service import handle_event

    svc = make_services()
    accept, load = repo.accept_event, repo.load_thread
    claims: list[repo.Claim] = []
    loads: list[str] = []

    def journal_and_compare(session, *args, **kwargs):  # type: ignore[no-untyped-def]
        outcome, thread_key, claim, unclaimed = accept(session, *args, **kwargs)
        if claim is None:   # an IN_PROCESS event, which takes no lease: read all the same
            assert unclaimed is not None and unclaimed == load(session, thread_key)
            return outcome, thread_key, claim, unclaimed
        claims.append(claim)
        if claim.read is not None:
            assert claim.read == load(session, thread_key)
        return outcome, thread_key, claim, unclaimed

    monkeypatch.setattr(repo, "accept_event", journal_and_compare)
    monkeypatch.setattr(repo, "load_thread", lambda s, key: loads.append(key) or load(s, key))
    events = thread_events("reads", consults=1)
    for raw in events:
        handle_event(svc, raw)
    claimed = len([raw for raw in events if raw["status"] != 2])   # all but IN_PROCESS
    assert [c.fresh for c in claims] == [True] + [False] * (claimed - 1)
    assert [c.read is not None for c in claims] == [False] + [True] * (claimed - 1)
    last = claims[-1].read
    assert last is not None and last.top_level_id is not None and len(last.calls) == 2
    assert all(call.legs for call in last.calls.values())   # each call's interaction, at least
    assert loads == []


def test_a_function_ends_with_its_read_only_when_its_condition_holds(engine, run: str) -> None:
    threads_t = ThreadRow.__table__
    bump = update(threads_t).where(threads_t.c.thread_key == bindparam("key")).values(
        version=threads_t.c.version + 1).returning(threads_t.c.version)
    read = select(threads_t.c.thread_key.label("key_read"), threads_t.c.lease_owner).where(
        threads_t.c.thread_key == bindparam("key"))
    function = PgFunction("callsync_test_bump_read", [Part(bump, into=("version",))],
                          engine.dialect, then=Then(read, when=bindparam(
                              "bumped", type_=Integer) > bindparam("above"),
                              feed={"bumped": "version"}))
    _journal(engine, call_events(f"then{run}")[:1], owner="w")
    with engine.connect() as conn:
        function.install(conn.connection.dbapi_connection)
        with conn.begin():
            first, rows = function.run_with_rows(conn, {"key": f"then{run}", "above": 2})
            assert (first.version, rows) == (2, [])      # 2 > 2 does not hold: no read
            first, rows = function.run_with_rows(conn, {"key": f"then{run}", "above": 2})
            assert first.version == 3 and first.key_read is None
            assert [(r.version, r.key_read, r.lease_owner) for r in rows] == [
                (None, f"then{run}", None)]


def test_a_part_runs_only_when_its_condition_holds(engine, run: str) -> None:
    """A guarded part that has nothing to do is not run (its outputs stay NULL), and its
    condition may read what an earlier part returned."""
    threads_t = ThreadRow.__table__
    bump = update(threads_t).where(threads_t.c.thread_key == bindparam("key")).values(
        version=threads_t.c.version + 1).returning(threads_t.c.version)
    function = PgFunction("callsync_test_guarded", [
        Part(bump, into=("first",), when=bindparam("go", type_=Boolean), strict=False),
        Part(bump, into=("second",), feed={"seen": "first"}, strict=False,
             when=bindparam("seen", type_=Integer) == 2),
    ], engine.dialect)
    _journal(engine, call_events(f"guard{run}")[:1], owner="w")

    def version(conn) -> int:  # type: ignore[no-untyped-def]
        return conn.scalar(select(ThreadRow.version).where(ThreadRow.thread_key == f"guard{run}"))

    with engine.connect() as conn:
        function.install(conn.connection.dbapi_connection)
        with conn.begin():
            out = function.run(conn, {"key": f"guard{run}", "go": False})
            assert (out.first, out.second) == (None, None)   # neither ran
            assert version(conn) == 1
        with conn.begin():
            out = function.run(conn, {"key": f"guard{run}", "go": True})
            assert (out.first, out.second) == (2, 3)         # the first's 2 let the second run
        with conn.begin():
            out = function.run(conn, {"key": f"guard{run}", "go": True})
            assert (out.first, out.second) == (4, None)
            assert version(conn) == 4
