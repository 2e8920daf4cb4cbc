"""The hot path's statements on the bare DBAPI cursor (worker.adapters.prepared), on both
databases: the values SQLAlchemy would store and read, its exceptions, its cursor events, and a
lost connection invalidated as SQLAlchemy invalidates one."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import bindparam, event, exc, insert, select, text

from tests.postgres import backend_pid, kill_backend
from worker.adapters import db
from worker.adapters.models import LegRow, ThreadRow
from worker.adapters.prepared import Prepared, PreparedRows

AT = datetime(2026, 12, 1, 19, 30, 5, 123456)
threads_t, legs_t = ThreadRow.__table__, LegRow.__table__


@pytest.fixture
def engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = db.make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def _new_thread(dialect):  # type: ignore[no-untyped-def]
    p = bindparam
    return Prepared(insert(threads_t).values(
        thread_key=p("key"), version=1, created_at=p("at"), updated_at=p("at"),
        lease_expires_at=p("at"),
    ).returning(threads_t.c.thread_key, threads_t.c.version, threads_t.c.lease_expires_at),
        dialect)


def test_values_are_stored_and_read_as_sqlalchemy_stores_and_reads_them(engine) -> None:
    insert_thread = _new_thread(engine.dialect)
    with engine.begin() as conn:
        row = insert_thread.run(conn, {"key": "t-1", "at": AT}).one()
    assert (row.thread_key, row.version, row.lease_expires_at) == ("t-1", 1, AT)
    with engine.connect() as conn:   # read back by SQLAlchemy's own execution
        stored = conn.execute(select(threads_t).where(threads_t.c.thread_key == "t-1")).one()
        raw = conn.exec_driver_sql("SELECT created_at FROM threads").scalar()
    assert (stored.created_at, stored.lease_expires_at, stored.version) == (AT, AT, 1)
    if engine.dialect.name == "sqlite":   # SQLAlchemy's own text format for a DateTime
        assert raw == "2026-12-01 19:30:05.123456"


def test_many_rows_in_one_statement_and_the_rows_changed(engine) -> None:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, sql, _params, _ctx, _many: seen.append(sql))
    legs = [("oracle_interaction", 1), ("caliq", 2), ("oracle_end", 3), ("oracle_phone_call", 4),
            ("x1", 5)]
    insert_legs = PreparedRows(
        lambda rows: insert(legs_t).values(rows),
        ("interaction_id", "leg", "state", "attempts", "updated_at"), engine.dialect, chunk=2)
    with engine.begin() as conn:
        _new_thread(engine.dialect).run(conn, {"key": "t-2", "at": AT})
        conn.execute(text("INSERT INTO calls (interaction_id, thread_key, status, sync_state, "
                          "created_at, updated_at) VALUES ('c-1', 't-2', 0, 'pending', "
                          ":at, :at)"), {"at": AT})
        seen.clear()
        assert insert_legs.run(conn, [
            {"interaction_id": "c-1", "leg": leg, "state": "done", "attempts": attempts,
             "updated_at": AT} for leg, attempts in legs]) == 5
        assert len(seen) == 3   # 2 + 2 + 1 rows: three statements, two of them compiled
        assert seen[0] == seen[1] != seen[2]
        bump = Prepared(threads_t.update().where(threads_t.c.thread_key == bindparam("key"))
                        .values(version=threads_t.c.version + 1), engine.dialect)
        bumped = bump.run(conn, {"key": "t-2"})
        assert (bumped.rowcount, bumped.all()) == (1, [])   # no RETURNING: nothing fetched
        assert bump.run(conn, {"key": "nobody"}).rowcount == 0
        claim = Prepared(threads_t.update().where(threads_t.c.thread_key == bindparam("key"))
                         .values(version=threads_t.c.version + 1)
                         .returning(threads_t.c.version), engine.dialect)
        assert claim.run(conn, {"key": "nobody"}).all() == []   # RETURNING, but no row
        assert [r.version for r in claim.run(conn, {"key": "t-2"}).all()] == [3]
        stored = Prepared(select(legs_t.c.leg, legs_t.c.attempts, legs_t.c.updated_at)
                          .where(legs_t.c.interaction_id == bindparam("call"))
                          .order_by(legs_t.c.attempts),
                          engine.dialect).run(conn, {"call": "c-1"}).all()
    assert [(r.leg, r.attempts, r.updated_at) for r in stored] == [
        (leg, attempts, AT) for leg, attempts in legs]


def test_a_database_error_is_sqlalchemys_and_the_transaction_rolls_back(engine) -> None:
    insert_thread = _new_thread(engine.dialect)
    with engine.begin() as conn:
        insert_thread.run(conn, {"key": "t-3", "at": AT})
    with pytest.raises(exc.IntegrityError) as raised, engine.begin() as conn:
        insert_thread.run(conn, {"key": "t-4", "at": AT})
        insert_thread.run(conn, {"key": "t-3", "at": AT})   # the primary key again
    assert "threads" in str(raised.value) and not raised.value.connection_invalidated
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM threads")) == 1   # t-4 rolled back


def test_sqlalchemys_cursor_events_see_each_statement(engine) -> None:
    seen: list[tuple[str, bool]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, sql, _params, _ctx, many: seen.append((sql.split()[0], many)))
    with engine.begin() as conn:
        _new_thread(engine.dialect).run(conn, {"key": "t-5", "at": AT})
    assert ("INSERT", False) in seen


def test_a_statement_with_columns_is_fetched_without_describing_its_result(
        engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg builds a Column object per column whenever its cursor's `description` is read:
    4.9% of the instructions per event on PostgreSQL (`callsync bench-inprocess`). A
    statement with columns (a SELECT, a RETURNING) always has a result set, so it is fetched
    without asking; a statement without columns still asks the cursor."""
    described: list[str] = []
    if engine.dialect.name == "postgresql":
        import psycopg

        plain = psycopg.Cursor.description

        def counted(cursor):  # type: ignore[no-untyped-def]
            described.append(cursor.pgresult.command_status.decode() if cursor.pgresult else "")
            return plain.fget(cursor)

        monkeypatch.setattr(psycopg.Cursor, "description", property(counted))
    p = bindparam
    touch = Prepared(threads_t.update().where(threads_t.c.thread_key == p("key")).values(
        version=threads_t.c.version + 1).returning(threads_t.c.version), engine.dialect)
    bump = Prepared(threads_t.update().where(threads_t.c.thread_key == p("key")).values(
        version=threads_t.c.version + 1), engine.dialect)
    with engine.begin() as conn:
        _new_thread(engine.dialect).run(conn, {"key": "t-7", "at": AT})
        described.clear()   # what connecting asked (SQLAlchemy's set-up) is not this test's
        assert touch.run(conn, {"key": "t-7"}).all() == [(2,)]
        missed = touch.run(conn, {"key": "no such thread"})
        assert (missed.all(), missed.rowcount) == ([], 0)   # a result set with no row
        changed = bump.run(conn, {"key": "t-7"})
        assert (changed.all(), changed.rowcount) == ([], 1)
    if engine.dialect.name == "postgresql":
        assert described == ["UPDATE 1"]   # only the statement without columns asked


def test_a_statement_that_needs_python_side_defaults_is_refused(engine) -> None:
    # ThreadRow.version has a Python-side default: only SQLAlchemy's execution applies it.
    with pytest.raises(ValueError, match="not preparable"):
        Prepared(insert(threads_t).values(thread_key=bindparam("key"), created_at=AT,
                                          updated_at=AT), engine.dialect)


@pytest.mark.postgres
def test_a_connection_lost_mid_task_is_invalidated_and_the_next_one_is_new(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)   # no ping to hide the loss
    engine = db.make_engine(postgres_url, pool_size=1)
    version = Prepared(select(threads_t.c.version).where(
        threads_t.c.thread_key == bindparam("key")), engine.dialect)
    try:
        dead = backend_pid(engine)
        kill_backend(postgres_url, dead)
        with pytest.raises(exc.OperationalError) as raised, engine.connect() as conn:
            version.run(conn, {"key": "x"})
        assert raised.value.connection_invalidated
        assert backend_pid(engine) != dead
        with engine.connect() as conn:
            assert version.run(conn, {"key": "x"}).scalar() is None
    finally:
        engine.dispose()
