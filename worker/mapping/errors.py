"""The two errors of the mapping layer: a bad mapping file, and a call that cannot be sent."""

from __future__ import annotations

from typing import Any

_MAX_SHOWN = 80  # long values (a transcript, a note) would drown the message


def show(value: Any) -> str:
    """A value as it appears in an error message: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"


class MappingError(ValueError):
    """A mapping file is wrong; the message always starts with `path:line:`."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")


class PayloadError(ValueError):
    """One event cannot become a valid payload for one target field.

    Raised locally so a bad call fails with a clear message instead of a remote 400.
    """

    def __init__(self, target: str, field: str, value: Any, reason: str) -> None:
        self.target = target
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{target}.{field}: {reason}")
