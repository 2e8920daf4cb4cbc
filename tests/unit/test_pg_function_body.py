"""Statements made into one PL/pgSQL function (worker.adapters.pg_function): the body is the
statements as compiled for PostgreSQL, in order, and a function that cannot be what its
statements are is refused when it is built."""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from worker.adapters.models import CallRow, ThreadRow
from worker.adapters.pg_function import Part, PgFunction, Then

PG = postgresql.psycopg.dialect()
threads_t, calls_t = ThreadRow.__table__, CallRow.__table__


def _new_thread():  # type: ignore[no-untyped-def]
    return insert(threads_t).values(
        thread_key=bindparam("key"), version=1, created_at=bindparam("now"),
        updated_at=bindparam("now"),
    ).returning(threads_t.c.thread_key, threads_t.c.version)


def _mark_calls():  # type: ignore[no-untyped-def]
    return update(calls_t).where(calls_t.c.thread_key == bindparam("key")).values(
        sync_state="pending", updated_at=bindparam("now"),
    ).returning(calls_t.c.interaction_id)


def test_the_body_is_the_statements_in_order_with_arguments_outputs_and_constants() -> None:
    function = PgFunction("f", [
        Part(_new_thread(), into=("key", "version")),
        Part(_mark_calls(), into=("call",), feed={"key": "key"}),
    ], PG)
    first, second = function.statements
    assert first.startswith("INSERT INTO threads") and second.startswith("UPDATE calls")
    assert "p_key::VARCHAR" in first and "1::INTEGER" in first   # an argument, a constant
    assert "calls.thread_key = o_key::VARCHAR" in second          # fed by the first statement
    assert "'pending'::VARCHAR" in second and "%(" not in first + second
    assert function.arguments == ("key", "now")
    body = function.create_sql
    assert body.startswith("CREATE OR REPLACE FUNCTION pg_temp.f(p_key VARCHAR(255), "
                           "p_now TIMESTAMP WITHOUT TIME ZONE, OUT o_key VARCHAR(255), "
                           "OUT o_version INTEGER, OUT o_call VARCHAR(255))")
    assert body.index(first) < body.index("INTO STRICT o_key, o_version;") < body.index(second)
    assert body.rstrip().endswith("INTO STRICT o_call;\nEND\n$callsync$")


@pytest.mark.parametrize(("parts", "message"), [
    ([Part(_mark_calls(), into=("call",), feed={"key": "nothing"})],
     "'key' is fed from 'nothing', which no earlier statement returns"),
    ([Part(_new_thread(), into=("key",))], "returns 2 columns and 1 names"),
    ([Part(_new_thread(), into=("key", "version")), Part(_new_thread(), into=("key", "v"))],
     "two statements return 'key'"),
])
def test_a_function_that_cannot_be_its_statements_is_refused(parts, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        PgFunction("f", parts, PG)


def test_a_parameter_with_no_type_and_another_database_are_refused() -> None:
    from sqlalchemy import func, select

    untyped = insert(threads_t).values(
        thread_key=func.coalesce(select(calls_t.c.thread_key).scalar_subquery(),
                                 bindparam("key")),
        version=1, created_at=bindparam("now"), updated_at=bindparam("now"),
    ).returning(threads_t.c.version)
    with pytest.raises(ValueError, match=r"no type for the parameters \['key'\]"):
        PgFunction("f", [Part(untyped, into=("version",))], PG)
    with pytest.raises(ValueError, match="needs PostgreSQL, not sqlite"):
        PgFunction("f", [Part(_new_thread(), into=("key", "version"))], sqlite.dialect())


def test_a_part_may_count_the_rows_it_changed_and_allow_no_row() -> None:
    mark = update(calls_t).where(calls_t.c.thread_key == bindparam("key")).values(
        sync_state="pending")                                    # no RETURNING
    function = PgFunction("g", [
        Part(_new_thread(), into=("key", "version"), strict=False),
        Part(mark, rows="marked"),
    ], PG)
    body = function.create_sql
    assert "OUT o_marked INTEGER" in body
    assert "\nINTO o_key, o_version;" in body and "STRICT" not in body
    assert body.index("UPDATE calls") < body.index("GET DIAGNOSTICS o_marked = ROW_COUNT;")
    with pytest.raises(ValueError, match="returns 0 columns and 0 names"):
        PgFunction("h", [Part(mark)], PG)   # neither outputs nor a count: nothing to read


def _read():  # type: ignore[no-untyped-def]
    return select(threads_t.c.top_level_call_id, threads_t.c.lease_owner).where(
        threads_t.c.thread_key == bindparam("key"))


def test_a_read_after_the_statements_is_returned_after_the_outputs_row() -> None:
    function = PgFunction("r", [Part(_new_thread(), into=("key", "version"))], PG, then=Then(
        _read(), when=bindparam("v", type_=Integer) > bindparam("above", type_=Integer),
        feed={"v": "version", "key": "key"}))
    body = function.create_sql
    assert ("RETURNS TABLE(o_key VARCHAR(255), o_version INTEGER, "
            "o_top_level_call_id VARCHAR(255), o_lease_owner VARCHAR(100))") in body
    assert "OUT o_" not in body and function.arguments == ("key", "now", "above")
    tail = body[body.index("INTO STRICT o_key, o_version;"):]
    assert tail.startswith("INTO STRICT o_key, o_version;\nRETURN NEXT;\n"
                           "IF o_version::INTEGER > p_above::INTEGER THEN\n"
                           "RETURN QUERY SELECT NULL::VARCHAR(255), NULL::INTEGER, then_rows.* "
                           "FROM (SELECT threads.top_level_call_id")
    assert "WHERE threads.thread_key = o_key::VARCHAR) AS then_rows;\nEND IF;\nEND" in tail


@pytest.mark.parametrize(("then", "message"), [
    (Then(_read(), when=bindparam("v", type_=Integer) > 1, feed={"v": "nothing"}),
     "'v' is fed from 'nothing', which no earlier statement returns"),
    (Then(select(threads_t.c.version).where(threads_t.c.thread_key == bindparam("key")),
          when=bindparam("key", type_=Integer) > 1),
     r"the read's columns \['version'\] are outputs too"),
])
def test_a_read_that_cannot_follow_the_statements_is_refused(then, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        PgFunction("r", [Part(_new_thread(), into=("key", "version"))], PG, then=then)


def test_a_guarded_part_is_wrapped_in_its_condition() -> None:
    function = PgFunction("f", [
        Part(_new_thread(), into=("key", "version")),
        Part(_mark_calls(), into=("call",), feed={"key": "key", "seen": "version"},
             when=bindparam("seen", type_=Integer) > 1, strict=False),
    ], PG)
    _, second = function.statements
    body = function.create_sql
    guarded = f"IF o_version::INTEGER > 1::INTEGER THEN\n{second}\nINTO o_call;\nEND IF;"
    assert guarded in body
    assert body.index("INTO STRICT o_key, o_version;") < body.index(guarded)
    assert function.arguments == ("key", "now")   # the condition's parameter is fed, not taken
