"""Genesys UCS phone-call events: validation and merging.

The field names and rules follow `genesys-ucs-phone-call.txt`. Validation is strict about what the
document calls mandatory and about types, so that a bad event is rejected with an error naming the
field and the value instead of reaching a CRM half-formed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    NEW = 0
    PENDING = 1
    IN_PROCESS = 2
    STOPPED = 3


ENTITY_TYPES = {
    0: "EMAIL_IN",
    1: "EMAIL_OUT",
    2: "CHAT",
    3: "PHONE_CALL",
    5: "CALLBACK",
    6: "COBROWSE",
    7: "INTERACTION",
}
PHONE_CALL = 3
VOICE = "voice"

MANDATORY = (
    "customer_id",
    "interaction_id",
    "status",
    "entity_type",
    "type",
    "media_type",
    "creator_app_id",
    "start_date",
)
STRING_FIELDS = (
    "customer_id", "interaction_id", "type", "sub_type", "media_type", "parent_id", "thread_id",
    "external_id", "outcome", "phone_number", "tconnection_id", "category_id", "subject",
    "stopped_reason", "text", "structured_text", "structured_text_mime", "binary_content",
    "binary_content_mime",
)
INTEGER_FIELDS = ("owner_id", "creator_app_id", "duration", "timeshift", "binary_content_size")
DATE_FIELDS = ("start_date", "end_date")
MAX_ID_LENGTH = 255  # Oracle MediaItemId / OriginalSystemReference / ExternalSystemCallId


class EventError(ValueError):
    """A bad event. The message names the field and the offending value."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {problem} (got {_show(value)})")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_genesys_datetime(value: str) -> datetime:
    """ISO 8601 as Genesys writes it (`2026-11-24T10:15:00.000Z`), with a zone."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


@dataclass(frozen=True)
class PhoneCallEvent:
    """A validated event: the Genesys fields as received, plus the keys callsync derives."""

    fields: Mapping[str, Any]

    @property
    def interaction_id(self) -> str:
        return self.fields["interaction_id"]

    @property
    def status(self) -> Status:
        return Status(self.fields["status"])

    @property
    def thread_key(self) -> str:
        return thread_key_of(self.fields)

    @property
    def is_root_candidate(self) -> bool:
        return is_root_candidate(self.fields)

    def fingerprint(self) -> str:
        return fingerprint(self.fields)


def thread_key_of(fields: Mapping[str, Any]) -> str:
    """A conversation thread: `thread_id`, else `parent_id`, else the call's own id."""
    return fields.get("thread_id") or fields.get("parent_id") or fields["interaction_id"]


def is_root_candidate(fields: Mapping[str, Any]) -> bool:
    """The call that opened its thread: it is the thread's id, or it has no parent call."""
    return fields["interaction_id"] == thread_key_of(fields) or not fields.get("parent_id")


def fingerprint(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_event(raw: Any) -> PhoneCallEvent:
    """Check one raw event against the Genesys document; raise EventError on the first problem."""
    if not isinstance(raw, Mapping):
        raise EventError("event", raw, "must be a JSON object")
    for name in MANDATORY:
        if raw.get(name) is None or raw.get(name) == "":
            raise EventError(name, raw.get(name), "is mandatory but missing")
    for name in STRING_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(name, value, "must be a string")
    for name in (*INTEGER_FIELDS, "status", "entity_type"):
        value = raw.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise EventError(name, value, "must be an integer")
    for name in ("interaction_id", "thread_id", "parent_id"):
        value = raw.get(name)
        if value is not None and len(value) > MAX_ID_LENGTH:
            raise EventError(name, value, f"is longer than {MAX_ID_LENGTH} characters")
    if raw["status"] not in {s.value for s in Status}:
        known = "0 NEW, 1 PENDING, 2 IN_PROCESS, 3 STOPPED"
        raise EventError("status", raw["status"], f"is not a known status ({known})")
    if raw["entity_type"] not in ENTITY_TYPES:
        raise EventError("entity_type", raw["entity_type"], "is not a known entity type")
    if raw["entity_type"] != PHONE_CALL:
        kind = ENTITY_TYPES[raw["entity_type"]]
        raise EventError("entity_type", raw["entity_type"], f"is {kind}, not a PHONE_CALL (3)")
    if raw["media_type"] != VOICE:
        raise EventError("media_type", raw["media_type"], "is not 'voice': not a phone call")
    for name in DATE_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise EventError(name, value, "must be an ISO 8601 date/time string")
        try:
            parse_genesys_datetime(value)
        except ValueError:
            raise EventError(
                name, value, "is not an ISO 8601 UTC date/time like 2026-11-24T10:15:00.000Z"
            ) from None
    _require_companions(raw, "binary_content", ("binary_content_mime", "binary_content_size"))
    _require_companions(raw, "structured_text", ("structured_text_mime",))
    size = raw.get("binary_content_size")
    if size is not None and size < 0:
        raise EventError("binary_content_size", size, "must not be negative")
    udata = raw.get("udata")
    if udata is not None and not isinstance(udata, Mapping):
        raise EventError("udata", udata, "must be a JSON object of key-value pairs")
    return PhoneCallEvent(dict(raw))


def _require_companions(raw: Mapping[str, Any], field: str, companions: Iterable[str]) -> None:
    if not raw.get(field):
        return
    for companion in companions:
        if raw.get(companion) is None or raw.get(companion) == "":
            raise EventError(
                companion, raw.get(companion),
                f"is mandatory when {field} is given ({raw[field]!r})",
            )


def merge_events(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold a call's events (in arrival order) into one view of the call.

    Status only moves forward: an event of a lower status than one already seen adds the fields
    that are still missing but overrides nothing, so a late IN_PROCESS after STOPPED changes
    nothing. `udata` is merged key by key under the same rule.
    """
    merged: dict[str, Any] = {}
    for event in events:
        newer = not merged or event["status"] >= merged["status"]
        for key, value in event.items():
            if value is None:
                continue
            if key == "udata":
                udata = dict(merged.get("udata") or {})
                for ukey, uvalue in value.items():
                    if newer or ukey not in udata:
                        udata[ukey] = uvalue
                merged["udata"] = udata
            elif newer or key not in merged:
                merged[key] = value
    return merged
