"""The hot path's statements: compiled once per dialect by SQLAlchemy, run on the DBAPI cursor.

SQLAlchemy still writes every statement (its dialects render the INSERT ... ON CONFLICT, the
RETURNING and the parameter style) and converts every value with its own type processors. What
is skipped is its per-execution machinery: the compiled-cache lookup, the execution context, the
event dispatch and the result set-up. That was 10 to 40 µs of client CPU per statement, measured
against the same statement on the bare cursor, and an event runs about nine.

Rows are inserted by one multi-row statement (PreparedRows), not the DBAPI's executemany:
psycopg runs executemany as a pipeline, which cost about twice the client CPU of one INSERT,
for one row as for three (see docs/performance-history.md).

SQLAlchemy's before_cursor_execute and after_cursor_execute events fire as usual. A DBAPI
error is handed back to SQLAlchemy's terms: wrapped in its DBAPIError (which the tasks
retry on) and, when it shows a lost connection, with the connection invalidated, as SQLAlchemy
does for a statement it runs itself.
"""

from __future__ import annotations

import contextlib
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter

Processor = Callable[[Any], Any]


class Rows:
    """The rows a statement returned (already converted) and the rows it changed."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise exc.NoResultFound("no row") if not self.rows else exc.MultipleResultsFound(
                f"{len(self.rows)} rows where one was expected")
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


class Prepared:
    """One statement for one dialect: its SQL, its parameters' order and processors, and the
    processors and names of the columns it returns."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if (getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None)
                or getattr(compiled, "escaped_bind_names", None)):
            # Python-side column defaults or escaped names: only SQLAlchemy's execution has them.
            raise ValueError(f"not preparable outside SQLAlchemy's execution: {statement}")
        self.sql = compiled.string
        binds = compiled.binds
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        self._defaults = {name: bind.effective_value for name, bind in binds.items()
                          if not bind.required}
        self._binds: dict[str, Processor] = {}
        for name, bind in binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._binds[name] = processor
        columns = list(getattr(statement, "exported_columns", ()))
        self._row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None
        # A statement with columns (a SELECT, a RETURNING) always has a result set to fetch;
        # asking the cursor instead costs psycopg a Column object per column, every time.
        self._returns_rows = bool(columns)
        self._results = [(i, processor) for i, c in enumerate(columns)
                         if (processor := c.type.dialect_impl(dialect).result_processor(
                             dialect, None)) is not None]

    def _arguments(self, params: Mapping[str, Any]) -> Any:
        values = {**self._defaults, **params}
        for name, processor in self._binds.items():
            if name in values:
                values[name] = processor(values[name])
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Rows:
        return self._execute(conn, self._arguments(params))

    def _execute(self, conn: Connection, arguments: Any) -> Rows:
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        # SQLAlchemy's cursor events still fire, so its instrumentation sees these statements
        # (with no execution context, which only SQLAlchemy's own execution makes).
        events = conn.dispatch
        try:
            if events.before_cursor_execute:
                events.before_cursor_execute(conn, cursor, self.sql, arguments, None, False)
            cursor.execute(self.sql, arguments)
            if events.after_cursor_execute:
                events.after_cursor_execute(conn, cursor, self.sql, arguments, None, False)
            returns_rows = self._returns_rows or cursor.description is not None
            rows = self._fetch(cursor) if returns_rows else []
            return Rows(rows, cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as error:
            lost = conn.dialect.is_disconnect(error, dbapi_connection, cursor)
            if lost:
                conn.invalidate(error)
            raise exc.DBAPIError.instance(
                self.sql, arguments, error, conn.dialect.loaded_dbapi.Error,
                connection_invalidated=lost, dialect=conn.dialect) from error
        finally:
            with contextlib.suppress(Exception):   # a connection just lost cannot close it
                cursor.close()

    def _fetch(self, cursor: Any) -> list[Any]:
        fetched = cursor.fetchall()
        if self._results:
            converted = []
            for row in fetched:
                values = list(row)
                for i, processor in self._results:
                    values[i] = processor(values[i])
                converted.append(values)
            fetched = converted
        make = self._row
        return [make(*row) for row in fetched] if make is not None else list(fetched)


RowBinds = dict[str, BindParameter[Any]]


class PreparedRows:
    """An INSERT of several rows as one statement: `build` makes it from one dict of bind
    parameters per row, and each row count is compiled once, on first use. More rows than
    `chunk` take several statements, so that at most `chunk` are ever compiled."""

    def __init__(self, build: Callable[[list[RowBinds]], ClauseElement], names: Sequence[str],
                 dialect: Dialect, chunk: int = 8) -> None:
        self._build, self._names, self._dialect, self._chunk = build, tuple(names), dialect, chunk
        self._by_count: dict[int, Prepared] = {}

    def _for(self, count: int) -> Prepared:
        prepared = self._by_count.get(count)
        if prepared is None:
            rows = [{name: bindparam(f"{name}_{i}") for name in self._names}
                    for i in range(count)]
            prepared = self._by_count.setdefault(count, Prepared(self._build(rows), self._dialect))
        return prepared

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert `rows` (each with every one of `names`); returns the rows changed."""
        changed = 0
        for start in range(0, len(rows), self._chunk):
            part = rows[start:start + self._chunk]
            params = {f"{name}_{i}": row[name] for i, row in enumerate(part)
                      for name in self._names}
            changed += self._for(len(part)).run(conn, params).rowcount
        return changed
