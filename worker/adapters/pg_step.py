"""A batch of steps' results and the release after it, as one PostgreSQL function call; and a
release alone, as another.

The same writes as repository.save_step followed by repository.release_thread and
repository.save_sync_states, in the same order (threads before calls, the one lock order):
the legs, the thread's top-level, the step's call's sync state, the requests, the release,
and the calls' sync states if the release happened. They run in autocommit as one statement
(Services.statements), so the batch costs one round trip instead of some seven with its BEGIN
and COMMIT (docs/performance-history.md).

A release refused because events arrived since the thread was read keeps the lease: the same
call then renews it and reads the thread again (repository.renew_lease, thread_version and
load_thread, sent one by one on SQLite). Under a burst a third of the events found their
thread's release refused so, and those three statements were three round trips more each.

A batch has one to three legs and requests and any number of calls to write, so the rows
travel as JSON arrays and each statement reads them with `jsonb_to_recordset`: one function
for every shape of batch. A part that is not wanted (no rows, a false flag, a release that
happened or did not) is not run: most calls need four or five of their nine statements.
Each part is a SQLAlchemy statement over the tables, compiled by worker.adapters.pg_function.
The release, the renewal, the version and the thread's read are the repository's own
statements; the others restate its statements in this form, so a test
(tests/integration/test_transactions.py) runs the same events through both, a failed request
among them, and compares every row they leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Integer, Table, and_, bindparam, case, column, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from worker.adapters.models import calls_t, legs_t, requests_t, threads_t
from worker.adapters.pg_function import Part, PgFunction, Then

SYNC_COLUMNS = ("interaction_id", "sync_state", "status")   # status: as the thread was read


def rows_of(name: str, table: Table, names: Sequence[str]) -> Any:
    """The JSON array argument `name` as rows of `table`'s columns `names`, typed."""
    return func.jsonb_to_recordset(bindparam(name, type_=JSONB)).table_valued(
        *(column(n, table.c[n].type) for n in names)).render_derived(name=name, with_types=True)


def _sync_from(name: str) -> Any:
    """Each call's sync state from the rows, unless it holds it already or an event moved the
    call past the status read (repository.save_sync's rule).

    The rows are the thread's own calls (a call never changes thread), and saying so is what
    keeps the statement indexed. The planner takes any set-returning function for 100 rows and
    a table never analysed for 10 pages, so a join on the call's id alone was planned as a hash
    of a full scan of `calls`. The function's plan is cached for the connection's life, so
    every release read the whole table: PostgreSQL's CPU per event grew with the table (`perf
    record`: a fifth of the backends' time in building that hash, 2,000 calls in). The
    thread's index finds its few calls however the table is estimated.
    """
    rows = rows_of(name, calls_t, SYNC_COLUMNS)
    return update(calls_t).where(
        calls_t.c.thread_key == bindparam("thread"),
        calls_t.c.interaction_id == rows.c.interaction_id,
        calls_t.c.sync_state != rows.c.sync_state, calls_t.c.status <= rows.c.status,
    ).values(sync_state=rows.c.sync_state, updated_at=bindparam("now"))


@dataclass(frozen=True)
class LeaseStatements:
    """The repository's statements that end a drive: `release` (a compare-and-set: the lease
    held and the thread unmoved), `renew` (held: extend it), the thread's `version`, and the
    whole thread's read (`thread_rows`)."""

    release: Any
    renew: Any
    version: Any
    thread_rows: Any


def _has_rows(name: str) -> Any:
    """The JSON array argument `name` holds a row."""
    return func.jsonb_array_length(bindparam(name, type_=JSONB)) > 0


def _release_parts(lease: LeaseStatements, wanted: Any = None) -> list[Part]:
    """The release (when `wanted` holds) with the calls' sync states it makes final; refused
    while the lease is still held, the renewal and the version to read the thread at."""
    p = bindparam
    released = p("released", type_=Integer)
    return [
        Part(lease.release, rows="released", when=wanted),
        Part(_sync_from("release_sync"), feed={"released": "released"}, rows="release_synced",
             when=and_(released == 1, _has_rows("release_sync"))),
        Part(lease.renew, feed={"released": "released"}, rows="renewed", when=released == 0),
        Part(lease.version, into=("current_version",), feed={"renewed": "renewed"},
             strict=False, when=p("renewed", type_=Integer) == 1),
    ]


def _thread_when_renewed(lease: LeaseStatements) -> Then:
    """The thread's rows after the outputs' row, when the lease was renewed."""
    return Then(lease.thread_rows, when=bindparam("renewed", type_=Integer) == 1,
                feed={"renewed": "renewed"})


def release_function(dialect: Dialect, lease: LeaseStatements) -> PgFunction:
    """A release with nothing else to save: give the lease back and store the calls' sync
    states, or renew it and read the thread again."""
    return PgFunction("callsync_release", _release_parts(lease), dialect,
                      then=_thread_when_renewed(lease))


def save_results_function(dialect: Dialect, lease: LeaseStatements,
                          leg_values: Sequence[str], request_values: Sequence[str]
                          ) -> PgFunction:
    """The steps' writes, then, when asked to (`release`), what release_function does."""
    p = bindparam
    leg_names = ("interaction_id", "leg", *leg_values)
    legs_in = rows_of("legs", legs_t, leg_names)
    new_legs = postgresql.insert(legs_t).from_select(
        list(leg_names), select(*(legs_in.c[n] for n in leg_names)))
    upsert_legs = new_legs.on_conflict_do_update(
        index_elements=[legs_t.c.interaction_id, legs_t.c.leg],
        set_={name: new_legs.excluded[name] for name in leg_values})
    # The top-level is saved whoever holds the lease now (the request was made); the lease is
    # extended only for `holder`, and the owner returned says whether that is still us.
    top_level = update(threads_t).where(threads_t.c.thread_key == p("thread")).values(
        top_level_interaction_id=p("top_level_id"), top_level_call_id=p("top_level_call"),
        updated_at=p("now"),
        lease_expires_at=case((threads_t.c.lease_owner == p("holder"),
                               p("expires", type_=threads_t.c.lease_expires_at.type)),
                              else_=threads_t.c.lease_expires_at),
    ).returning(threads_t.c.lease_owner)
    requests_in = rows_of("requests", requests_t, request_values)
    new_requests = postgresql.insert(requests_t).from_select(
        list(request_values), select(*(requests_in.c[n] for n in request_values)))
    return PgFunction("callsync_save_results", [
        Part(upsert_legs, rows="legs_written", when=_has_rows("legs")),
        Part(top_level, into=("lease_owner",), strict=False,
             when=p("write_top_level", type_=Boolean)),
        Part(_sync_from("step_sync"), rows="step_synced", when=_has_rows("step_sync")),
        Part(new_requests, rows="requests_written", when=_has_rows("requests")),
        *_release_parts(lease, p("release", type_=Boolean)),
    ], dialect, then=_thread_when_renewed(lease))
