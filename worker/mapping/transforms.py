"""Named value transforms a mapping file may apply, in order, to a field's value.

A transform takes the value and the per-file `TransformContext` (for tables such as
`directions`) and returns the new value; `None` in gives `None` out, so a missing value stays
missing and the field is omitted. Bad input raises `ValueError`; the renderer turns that into a
`PayloadError` naming the field.
"""

from __future__ import annotations

import base64 as _b64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class TransformContext:
    # Genesys `type` (lower-cased) -> Oracle DirectionCd; key "default" for anything else.
    directions: Mapping[str, str] = field(default_factory=dict)


Transform = Callable[[Any, TransformContext], Any]


def _string(value: Any, ctx: TransformContext) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _integer(value: Any, ctx: TransformContext) -> Any:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError(f"{value!r} is not an integer")


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def _boolean(value: Any, ctx: TransformContext) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def parse_genesys_datetime(value: Any) -> datetime:
    """Genesys ISO-8601 (`2026-11-24T10:15:00.000Z`, or with an offset) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date/time") from None
    if moment.tzinfo is None:  # Genesys dates are UTC even when the zone is left off
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _oracle_datetime(value: Any, ctx: TransformContext) -> Any:
    if value is None:
        return None
    return parse_genesys_datetime(value).replace(microsecond=0).isoformat()


def _caliq_datetime(value: Any, ctx: TransformContext) -> Any:
    # Caliq does not document a zone; UTC without an offset is what it is sent.
    if value is None:
        return None
    return parse_genesys_datetime(value).strftime("%Y-%m-%dT%H:%M:%S")


def _direction(value: Any, ctx: TransformContext) -> Any:
    if value is None:
        return None
    code = ctx.directions.get(str(value).strip().lower()) or ctx.directions.get("default")
    if code is None:
        raise ValueError(f"no direction for type {value!r} and no `default` in `directions`")
    return code


_PHONE_PREFIX = re.compile(r"^\s*(?:tel|sips?):", re.IGNORECASE)


def normalise_phone(value: str) -> str:
    """`sip:+44 20 7946-0958@pbx;user=phone` -> `+442079460958`; "" when no digits remain."""
    text = _PHONE_PREFIX.sub("", value)
    text = re.split(r"[@;]", text, maxsplit=1)[0].strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return ""
    return ("+" if text.startswith("+") else "") + digits


def _phone(value: Any, ctx: TransformContext) -> Any:
    if value is None:
        return None
    return normalise_phone(str(value)) or None  # "anonymous" means no number: omit the field


# 13-19 digits, optionally grouped by single spaces or dashes; not part of a longer digit run.
# The first digit comes before the look-behind (no digit before it) so that the regex engine
# skips to the next digit instead of trying a match at every character: half the time on a
# transcript, the same matches.
_CARD = re.compile(r"\d(?<!\d\d)(?:[ -]?\d){12,18}(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    # Luhn keeps order numbers, phone numbers and timestamps readable.
    return f"[card ****{digits[-4:]}]" if luhn_ok(digits) else match.group()


def redact_text(text: str) -> str:
    """Mask Luhn-valid payment card numbers, keeping the last four digits."""
    return _CARD.sub(_mask_card, text)


def _redact(value: Any, ctx: TransformContext) -> Any:
    if value is None:
        return None
    return redact_text(str(value))


def _upper(value: Any, ctx: TransformContext) -> Any:
    return None if value is None else str(value).upper()


def _lower(value: Any, ctx: TransformContext) -> Any:
    return None if value is None else str(value).lower()


def _base64(value: Any, ctx: TransformContext) -> Any:
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return _b64.b64encode(raw).decode("ascii")


TRANSFORMS: dict[str, Transform] = {
    "string": _string,
    "integer": _integer,
    "boolean": _boolean,
    "oracle_datetime": _oracle_datetime,
    "caliq_datetime": _caliq_datetime,
    "direction": _direction,
    "phone": _phone,
    "redact": _redact,
    "upper": _upper,
    "lower": _lower,
    "base64": _base64,
}


def apply(name: str, value: Any, ctx: TransformContext | None = None) -> Any:
    """Run one named transform (KeyError if the name is unknown)."""
    return TRANSFORMS[name](value, ctx or TransformContext())
