"""Fit one rendered value to its documented target field (type, length, normal form)."""

from __future__ import annotations

import re
from typing import Any

from worker.mapping.errors import PayloadError, show
from worker.mapping.schema import Target, TargetField
from worker.mapping.transforms import normalise_phone

TRUNCATION_MARKER = "…[truncated]"
_INT = re.compile(r"\s*[+-]?\d+\s*")


def truncate(text: str, max_length: int) -> str:
    """`text` cut so that it plus the marker is at most `max_length` characters."""
    if len(text) <= max_length:
        return text
    if max_length <= len(TRUNCATION_MARKER):  # no room for a marker: a plain cut
        return text[:max_length]
    return text[: max_length - len(TRUNCATION_MARKER)].rstrip() + TRUNCATION_MARKER


def fit_value(target: Target, spec: TargetField, value: Any) -> Any:
    """The value as sent, `None` meaning "omit the field"; PayloadError when it cannot be sent."""
    if value is None:
        return None

    def fail(reason: str) -> PayloadError:
        return PayloadError(target.label, spec.name, value, reason)

    if spec.type == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        raise fail(f"value {show(value)} is not an integer")
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        raise fail(f"value {show(value)} is not a boolean")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise fail(f"value {show(value)} is not a string")
    text = str(value)
    if spec.kind == "phone":
        text = normalise_phone(text)
        if not text:
            return None
    if spec.max_length is None or len(text) <= spec.max_length:
        return text
    if spec.kind == "text":
        return truncate(text, spec.max_length)
    raise fail(
        f"value {show(text)} is {len(text)} characters, the documented maximum is {spec.max_length}"
    )


def fit_payload(target: Target, payload: dict[str, Any]) -> dict[str, Any]:
    """Every field fitted; fields whose value is missing are dropped (never sent as null)."""
    out: dict[str, Any] = {}
    for name, value in payload.items():
        fitted = fit_value(target, target.fields[name], value)
        if fitted is not None:
            out[name] = fitted
    return out
