"""Collection reads in the ADF REST style: ``q`` equality filters, finders and pagination."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from worker.sandbox.oracle_schema import OracleError

DEFAULT_LIMIT = 25
MAX_LIMIT = 500  # ADF runtime's internal upper limit
_SPLIT = re.compile(r";|\s+and\s+", re.IGNORECASE)
_EQUALS = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(.*?)\s*$")

Row = dict[str, Any]


def parse_q(q: str, queryable: Iterable[str], resource: str) -> list[tuple[str, str]]:
    """``Attr=value`` / ``Attr='value'`` joined by ';' or ' and ' → [(attr, value)].

    Only equality is simulated; anything else is a 400 so an unsupported query is noticed.
    """
    allowed = set(queryable)
    terms: list[tuple[str, str]] = []
    for expression in filter(str.strip, _SPLIT.split(q)):
        match = _EQUALS.match(expression)
        if not match:
            raise OracleError(
                400,
                f"The q expression '{expression}' is not supported (sandbox supports Attr=value)",
                "SBX-BAD-QUERY",
                "q",
            )
        name, value = match.groups()
        if name not in allowed:
            raise OracleError(
                400,
                f"Attribute {name} in resource {resource} is not found or not queryable",
                "SBX-ATTR-NOT-FOUND",
                name,
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        terms.append((name, value))
    return terms


def parse_finder(finder: str) -> tuple[str, dict[str, str]]:
    """``Name;Var=val,Var2=val2`` → (Name, {Var: val, ...})."""
    name, _, rest = finder.partition(";")
    bindings: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise OracleError(
                400, f"The finder variable '{pair}' has no value", "SBX-BAD-FINDER", "finder"
            )
        bindings[key.strip()] = value
    return name.strip(), bindings


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(row: Row, terms: list[tuple[str, str]]) -> bool:
    return all(as_text(row.get(name)) == value for name, value in terms)


def page(
    rows: list[Row],
    params: dict[str, str],
    self_href: str,
    render: Callable[[Row, bool], Row],
) -> dict[str, Any]:
    """Collection envelope with limit/offset/onlyData/totalResults handling."""
    limit = min(_int_param(params, "limit", DEFAULT_LIMIT), MAX_LIMIT)
    offset = _int_param(params, "offset", 0)
    only_data = params.get("onlyData", "").lower() == "true"
    chosen = rows[offset : offset + limit]
    envelope: dict[str, Any] = {
        "items": [render(row, only_data) for row in chosen],
        "count": len(chosen),
        "hasMore": offset + len(chosen) < len(rows),
        "limit": limit,
        "offset": offset,
    }
    if params.get("totalResults", "").lower() == "true":
        envelope["totalResults"] = len(rows)
    if not only_data:
        envelope["links"] = [
            {"rel": "self", "href": self_href, "name": "collection", "kind": "collection"}
        ]
    return envelope


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise OracleError(
            400, f"The query parameter {name} must be an integer", "SBX-BAD-PARAM", name
        ) from None
    if value < 0:
        raise OracleError(
            400, f"The query parameter {name} must not be negative", "SBX-BAD-PARAM", name
        )
    return value
