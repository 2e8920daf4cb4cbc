"""The agents table, `mappings/agents.csv`: Genesys owner_id -> Oracle resource, Caliq employee."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.mapping.errors import MappingError

COLUMNS = ("owner_id", "oracle_resource_id", "caliq_employee_id", "name")
REQUIRED_COLUMNS = ("owner_id", "oracle_resource_id", "caliq_employee_id")
_DIGITS = re.compile(r"\d{1,18}")  # Genesys DB ids and Oracle int64 resource ids
_EMPLOYEE_ID = re.compile(r"\S{1,10}")  # Caliq ContactedBy: documented max length 10


@dataclass(frozen=True)
class Agent:
    owner_id: int
    oracle_resource_id: int | None
    caliq_employee_id: str | None
    name: str | None = None


class Agents(Mapping[int, Agent]):
    """Read-only owner_id -> Agent; `for_owner` accepts the event's owner_id as int or str."""

    def __init__(self, agents: Mapping[int, Agent]) -> None:
        self._agents = dict(agents)

    def __getitem__(self, owner_id: int) -> Agent:
        return self._agents[owner_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def for_owner(self, owner_id: Any) -> Agent | None:
        if owner_id is None or isinstance(owner_id, bool):
            return None
        try:
            return self._agents.get(int(str(owner_id).strip()))
        except ValueError:
            return None


def load_agents(path: Path) -> Agents:
    """Parse and validate agents.csv; every problem names its CSV line."""
    where = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(where, 1, "file not found") from None
    with handle:
        rows = [
            (line, row)
            for line, row in _numbered_rows(handle)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
        ]
    if not rows:
        raise MappingError(where, 1, f"missing header: expected {','.join(REQUIRED_COLUMNS)}")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    for column in header:
        if column not in COLUMNS:
            raise MappingError(
                where,
                header_line,
                f"header: unknown column {column!r} (known: {', '.join(COLUMNS)})",
            )
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise MappingError(where, header_line, f"header: missing column {column!r}")
    if len(set(header)) != len(header):
        raise MappingError(where, header_line, "header: a column appears twice")

    agents: dict[int, Agent] = {}
    first_line: dict[int, int] = {}
    for line, row in rows[1:]:
        missing = header[len(row) :]
        if len(row) > len(header) or any(col in REQUIRED_COLUMNS for col in missing):
            raise MappingError(where, line, f"expected {len(header)} columns, found {len(row)}")
        row = row + [""] * len(missing)  # a trailing optional `name` may be left off
        cells = {col: cell.strip() for col, cell in zip(header, row, strict=True)}
        agent = _agent(where, line, cells)
        if agent.owner_id in agents:
            raise MappingError(
                where,
                line,
                f"owner_id: duplicate owner_id {agent.owner_id} "
                f"(first seen on line {first_line[agent.owner_id]})",
            )
        agents[agent.owner_id] = agent
        first_line[agent.owner_id] = line
    return Agents(agents)


def _numbered_rows(handle: Any) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(handle)
    start = 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1  # a quoted cell may span lines: report where the row starts


def _agent(where: str, line: int, cells: dict[str, str]) -> Agent:
    owner = cells["owner_id"]
    if not _DIGITS.fullmatch(owner):
        raise MappingError(where, line, f"owner_id: {owner!r} is not a Genesys person DB id")
    resource = cells["oracle_resource_id"]
    if resource and not _DIGITS.fullmatch(resource):
        raise MappingError(
            where, line, f"oracle_resource_id: {resource!r} is not an Oracle resource id (digits)"
        )
    employee = cells["caliq_employee_id"]
    if employee and not _EMPLOYEE_ID.fullmatch(employee):
        raise MappingError(
            where,
            line,
            f"caliq_employee_id: {employee!r} must be 1-10 characters without spaces",
        )
    if not resource and not employee:
        raise MappingError(where, line, "owner_id: neither an Oracle nor a Caliq id is given")
    return Agent(
        owner_id=int(owner),
        oracle_resource_id=int(resource) if resource else None,
        caliq_employee_id=employee or None,
        name=cells.get("name") or None,
    )
