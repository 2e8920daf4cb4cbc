"""Statements that run one after the other, sent to PostgreSQL as one function call.

On PostgreSQL each statement is a round trip, and on a server that shares the workers' cores a
round trip costs more than the statement: `perf record` of a backend running the journal's
three statements in a loop found a third of its time waking the client and switching tasks,
and little in the statements. A `PgFunction` runs such a sequence as one PL/pgSQL function: one
round trip instead of one per statement.

The function's body is the statements as SQLAlchemy compiles them for PostgreSQL, in their
order, each one's RETURNING read into the function's OUT parameters (`INTO STRICT`: exactly one
row, as the caller's `.one()` asks; or `INTO`, where no row is an answer too), or the number of
rows it changed counted into one (`GET DIAGNOSTICS`). A part may run only when a condition
holds (`when`): a statement that has nothing to do still costs the server its executor's
start, some 11 µs each on an idle server, more when it is busy. A VOLATILE function takes a fresh
snapshot for each statement, as the statements sent one by one do, so each sees what the one
before it waited for: the same locks in the same order and the same answers. Nothing of the
logic is written twice. It is a temporary function (`pg_temp`), created on every new
connection (worker.adapters.db), so it always matches the code that calls it and needs no
migration.

A function may also end with a read (`Then`): a SELECT that needs the statements' writes, whose
rows it returns after its row of outputs, when a condition on those outputs holds. The journal's
function reads the thread it has just claimed that way, in the same round trip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, bindparam, column, text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement, Select
from sqlalchemy.sql.sqltypes import NullType
from sqlalchemy.types import TypeEngine

from worker.adapters.prepared import Prepared

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class Part:
    """One statement of a function: `into` names the columns its RETURNING gives, in order
    (the function's outputs); `feed` takes bind parameters from an earlier part's output
    instead of from the function's arguments. `strict`: exactly one row, else the call fails
    (without it, no row leaves the outputs NULL). `rows` names an output that counts the rows
    the statement changed, for a statement with no RETURNING, or one of several rows. `when`:
    the statement runs only if this holds (its parameters as the statement's, `feed` too);
    otherwise its outputs stay NULL."""

    statement: ClauseElement
    into: Sequence[str] = ()
    feed: Mapping[str, str] = field(default_factory=dict)
    strict: bool = True
    rows: str | None = None
    when: ColumnElement[bool] | None = None

    def after(self) -> str:
        """What the body runs after the statement: its outputs, its row count."""
        into = ""
        if self.into:
            outputs = ", ".join(f"o_{out}" for out in self.into)
            into = f"\nINTO {'STRICT ' if self.strict else ''}{outputs}"
        rows = f"\nGET DIAGNOSTICS o_{self.rows} = ROW_COUNT;" if self.rows else ""
        return f"{into};{rows}"


@dataclass(frozen=True)
class Then:
    """A SELECT run after the parts, when `when` holds (an expression whose parameters are the
    function's arguments or, through `feed`, the parts' outputs): the function returns its
    rows after the row of outputs. Its columns' names must differ from the outputs'."""

    statement: Select[Any]
    when: ColumnElement[bool]
    feed: Mapping[str, str] = field(default_factory=dict)


class PgFunction:
    """`parts` as one function `pg_temp.<name>`: `create_sql` makes it on a connection, and
    `run` calls it with every part's parameters (one dict) and returns its one row; with a
    `then`, `run_with_rows` returns that row and the rows the read returned (none when its
    condition did not hold)."""

    def __init__(self, name: str, parts: Sequence[Part], dialect: Dialect,
                 then: Then | None = None) -> None:
        if dialect.name != "postgresql":
            raise ValueError(f"{name}: a PL/pgSQL function needs PostgreSQL, not {dialect.name}")
        self.name = name
        arguments: dict[str, TypeEngine[Any]] = {}
        outputs: dict[str, TypeEngine[Any]] = {}
        # The body's statements in order (what a test of lock order reads).
        self.statements = [self._part_sql(part, dialect, arguments, outputs) for part in parts]
        guards = [None if part.when is None else self._sql(part.when, part.feed, dialect,
                                                           arguments) for part in parts]
        read: dict[str, TypeEngine[Any]] = {}
        if then is not None:
            self._check_feed(then.feed, outputs)
            read = {c.key: c.type for c in then.statement.exported_columns}
            if clash := sorted(set(read) & set(outputs)):
                raise ValueError(f"{name}: the read's columns {clash} are outputs too")
            when = self._sql(then.when, then.feed, dialect, arguments)
            select_sql = self._sql(then.statement, then.feed, dialect, arguments)
        untyped = [arg for arg, type_ in arguments.items() if isinstance(type_, NullType)]
        if untyped:
            raise ValueError(f"{name}: no type for the parameters {untyped}; give each a type "
                             "in one of its statements")

        def sql_type(type_: TypeEngine[Any]) -> str:
            return dialect.type_compiler_instance.process(type_)

        parameters = [f"p_{arg} {sql_type(t)}" for arg, t in arguments.items()]
        returned = {**outputs, **read}
        statements = "\n".join(
            f"{sql}{part.after()}" if guard is None
            else f"IF {guard} THEN\n{sql}{part.after()}\nEND IF;"
            for sql, part, guard in zip(self.statements, parts, guards, strict=True))
        if then is None:
            signature = ", ".join(parameters + [f"OUT o_{out} {sql_type(t)}"
                                                for out, t in outputs.items()])
        else:
            # A set-returning function: its columns are its variables, so the outputs' row is
            # RETURN NEXT (the read's columns still NULL), and the read's rows follow it.
            signature = ", ".join(parameters) + ") RETURNS TABLE(" + ", ".join(
                f"o_{out} {sql_type(t)}" for out, t in returned.items())
            nulls = ", ".join(f"NULL::{sql_type(t)}" for t in outputs.values())
            statements += (f"\nRETURN NEXT;\nIF {when} THEN\nRETURN QUERY SELECT {nulls}, "
                           f"then_rows.* FROM ({select_sql}) AS then_rows;\nEND IF;")
        if "$callsync$" in statements:
            raise ValueError(f"{name}: a statement holds the function's quote, $callsync$")
        self.create_sql = (
            f"CREATE OR REPLACE FUNCTION pg_temp.{name}({signature})\n"
            f"LANGUAGE plpgsql VOLATILE AS $callsync$\nBEGIN\n{statements}\nEND\n$callsync$")
        # SQLAlchemy casts each argument to its type, as it does the statements' own parameters.
        call = text(
            f"SELECT {', '.join(f'o_{out} AS {out}' for out in returned)} FROM pg_temp.{name}("
            + ", ".join(f":{arg}" for arg in arguments) + ")"
        ).bindparams(*(bindparam(arg, type_=t) for arg, t in arguments.items())).columns(
            *(column(out, t) for out, t in returned.items()))
        self._call = Prepared(call, dialect)
        self.arguments = tuple(arguments)

    def _part_sql(self, part: Part, dialect: Dialect, arguments: dict[str, TypeEngine[Any]],
                  outputs: dict[str, TypeEngine[Any]]) -> str:
        """The part's statement as the body runs it: its parameters the function's arguments,
        the outputs it is fed, or its own constants. Adds what it takes and returns."""
        columns = list(getattr(part.statement, "exported_columns", ()))
        if len(columns) != len(part.into) or not (columns or part.rows):
            raise ValueError(f"{self.name}: a statement returns {len(columns)} columns and "
                             f"{len(part.into)} names were given for them")
        self._check_feed(part.feed, outputs)
        sql = self._sql(part.statement, part.feed, dialect, arguments)
        named = [(out, c.type) for out, c in zip(part.into, columns, strict=True)]
        for out, type_ in named + ([(part.rows, Integer())] if part.rows else []):
            if out in outputs:
                raise ValueError(f"{self.name}: two statements return {out!r}")
            outputs[out] = type_
        return sql

    def _check_feed(self, feed: Mapping[str, str], outputs: Mapping[str, Any]) -> None:
        for name, source in feed.items():
            if source not in outputs:
                raise ValueError(f"{self.name}: {name!r} is fed from {source!r}, which no "
                                 "earlier statement returns")

    def _sql(self, clause: ClauseElement, feed: Mapping[str, str], dialect: Dialect,
             arguments: dict[str, TypeEngine[Any]]) -> str:
        """`clause` as the body runs it: its parameters the function's arguments, the outputs
        it is fed, or its own constants. Adds the arguments it takes."""
        compiled = clause.compile(dialect=dialect)
        if getattr(compiled, "escaped_bind_names", None):
            raise ValueError(f"{self.name}: escaped parameter names are not supported")

        def place(match: re.Match[str]) -> str:
            name = match.group(1)
            bind = compiled.binds[name]
            if name in feed:
                return f"o_{feed[name]}"
            if bind.required:
                known = arguments.get(name)
                if known is None or isinstance(known, NullType):
                    arguments[name] = bind.type
                return f"p_{name}"
            # A constant of the statement (a literal, a column default): written in the body.
            value = bind.effective_value
            if value is None:
                return "NULL"
            literal = bind.type.literal_processor(dialect)
            if literal is None:
                raise ValueError(f"{self.name}: no literal form for the constant {name!r}")
            return str(literal(value))

        # pyformat doubles a literal %; the function's body is sent with no parameters.
        return _PLACEHOLDER.sub(place, compiled.string).replace("%%", "%")

    def install(self, dbapi_connection: Any) -> None:
        """Create (or replace) the function on one DBAPI connection, and commit."""
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.create_sql)
        finally:
            cursor.close()
        dbapi_connection.commit()

    def run(self, conn: Any, params: Mapping[str, Any]) -> Any:
        """The function's one row (its outputs by name), called on `conn`'s transaction."""
        return self._call.run(conn, {arg: params[arg] for arg in self.arguments}).one()

    def run_with_rows(self, conn: Any, params: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        """The outputs' row and the rows of the function's read (`then`), in one call."""
        first, *rows = self._call.run(conn, {arg: params[arg] for arg in self.arguments}).all()
        return first, rows
