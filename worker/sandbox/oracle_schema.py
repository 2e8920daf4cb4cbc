"""Oracle Fusion attributes the simulator accepts, read independently from the REST API documents
(/work/shared/api-docs/oracle-*.txt), and the checks a real ADF service applies to a request body.

Deliberately does not import worker.mapping: the simulator is a second reading of the docs, so a
misreading in the worker's mapping shows up as a 400 here instead of being copied.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STRING, INT64, BOOLEAN, DATETIME, BYTES = "string", "int64", "boolean", "date-time", "byte"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Attr:
    kind: str
    max_length: int | None = None


class OracleError(Exception):
    """A failure to answer in Oracle's error format (status, message, code, attribute path)."""

    def __init__(self, status: int, message: str, code: str, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.path = path


# Child-interaction POST / interaction PATCH request schemas.
INTERACTION_WRITABLE: dict[str, Attr] = {
    "AccountPartyId": Attr(INT64),
    "AgentHTTPSessionId": Attr(STRING, 100),
    "ChannelId": Attr(INT64),
    "ChannelTypeCd": Attr(STRING, 30),
    "ContactPartyId": Attr(INT64),
    "Description": Attr(STRING, 1000),
    "DirectionCd": Attr(STRING, 30),
    "EndInteractionFlag": Attr(BOOLEAN),
    "EndTime": Attr(DATETIME),
    "InteractionNumber": Attr(STRING, 30),
    # The docs show this Y/N field without its name; the newer Fusion schema calls it
    # manuallyLoggedFlag, older text "manually created". Accept both spellings.
    "ManuallyCreatedFlag": Attr(STRING, 1),
    "ManuallyLoggedFlag": Attr(STRING, 1),
    "MarketingReferenceId": Attr(INT64),
    "MediaItemId": Attr(STRING, 255),
    "OriginalSystemReference": Attr(STRING, 255),
    "OwnerResourceId": Attr(INT64),
    "ParentInteractionId": Attr(INT64),
    "Payload": Attr(STRING),
    "QueueId": Attr(INT64),
    "QueueNumber": Attr(STRING, 30),
    "SourceCd": Attr(STRING, 30),
    "StartInteractionFlag": Attr(BOOLEAN),
    "StartTime": Attr(DATETIME),
    "StatusCd": Attr(STRING, 30),
    "StripeCd": Attr(STRING, 30),
    "SubstatusCd": Attr(STRING, 30),
}
# Names from the item-response schema and examples marked "Read Only: true".
INTERACTION_READ_ONLY = frozenset({
    "InteractionId", "TopLevelFlag", "CreatedBy", "CreationDate", "LastUpdateDate",
    "LastUpdatedBy", "LastUpdateLogin", "ChannelDisplayName", "ChannelCode",
    "AccountPartyNumber", "AccountPartyUniqueName", "ContactPartyNumber",
    "ContactPartyUniqueName", "QueueName", "OwnerResourcePartyNumber",
    "OwnerResourcePartyUniqueName", "ParentInteractionNumber", "DeleteFlag", "UpdateFlag",
    "NotifyFlag", "links",
})  # fmt: skip
INTERACTION_DEFAULTS = {
    "StatusCd": "ORA_SVC_OPEN",
    "DirectionCd": "ORA_SVC_INBOUND",
    "StripeCd": "ORA_SVC_CRM",
}

# phoneCalls POST request schema.
PHONE_CALL_WRITABLE: dict[str, Attr] = {
    "CallDetailsURL": Attr(STRING, 1000),
    "CallNumber": Attr(STRING, 30),
    "CallRecording": Attr(BYTES),
    "DeletedFlag": Attr(BOOLEAN),
    "ExternalSystemCallId": Attr(STRING, 255),
    "InteractionId": Attr(INT64),
    "LeftMessageFlag": Attr(BOOLEAN),
    "PhoneNumber": Attr(STRING, 30),
    "RecordingFormat": Attr(STRING, 64),
    "RecordingURL": Attr(STRING, 1000),
    "TranscriptURL": Attr(STRING, 1000),
}
PHONE_CALL_READ_ONLY = frozenset({
    "CallId", "CreatedBy", "CreationDate", "LastUpdateDate", "LastUpdatedBy", "LastUpdateLogin",
    "links",
})  # fmt: skip

# phoneCalls-TranscriptMessage-item-post-request schema.
TRANSCRIPT_WRITABLE: dict[str, Attr] = {
    "CallId": Attr(INT64),
    "DeletedFlag": Attr(BOOLEAN),
    "MessageContent": Attr(BYTES),
    "MessageId": Attr(INT64),
    "MessageNumber": Attr(STRING, 30),
    "MessageTypeCd": Attr(STRING, 30),
    "PostedByDisplayName": Attr(STRING, 64),
    "PostedByPartyId": Attr(STRING, 30),
    "RoleCd": Attr(STRING, 30),
    "VisibilityCd": Attr(STRING, 30),
}
TRANSCRIPT_READ_ONLY = frozenset({
    "InteractionId", "CreatedBy", "CreationDate", "LastUpdateDate", "LastUpdatedBy",
    "LastUpdateLogin", "links",
})  # fmt: skip


def check_body(
    body: Any,
    writable: dict[str, Attr],
    read_only: frozenset[str],
    resource: str,
    prefix: str = "",
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Validate a request object attribute by attribute; return it normalised.

    ``skip`` names attributes the caller validates itself (nested child collections).
    """
    if not isinstance(body, dict):
        raise OracleError(
            400,
            f"The request body for resource {resource} must be a JSON object",
            "SBX-BAD-BODY",
            prefix.rstrip("."),
        )
    clean: dict[str, Any] = {}
    for name, value in body.items():
        path = f"{prefix}{name}"
        if name in skip:
            clean[name] = value
        elif name in read_only:
            raise OracleError(
                400,
                f"Attribute {path} in resource {resource} is read-only and cannot be set",
                "SBX-READ-ONLY",
                path,
            )
        elif name not in writable:
            raise OracleError(
                400,
                f"Attribute {path} in resource {resource} is not found",
                "SBX-ATTR-NOT-FOUND",
                path,
            )
        else:
            clean[name] = check_value(path, writable[name], value)
    return clean


def check_value(path: str, attr: Attr, value: Any) -> Any:
    if value is None:
        return None
    if attr.kind == INT64:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, "an integer (int64)", value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _type_error(path, "within the int64 range", value)
        return value
    if attr.kind == BOOLEAN:
        if not isinstance(value, bool):
            raise _type_error(path, "a boolean", value)
        return value
    if isinstance(value, bool | dict | list):
        raise _type_error(path, "a string", value)
    # ADF converts JSON numbers into string attributes, so a number is not an error here.
    text = value if isinstance(value, str) else str(value)
    if attr.max_length is not None and len(text) > attr.max_length:
        raise OracleError(
            400,
            f"The value of attribute {path} exceeds the maximum length {attr.max_length}",
            "SBX-MAX-LENGTH",
            path,
        )
    if attr.kind == DATETIME:
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise _type_error(path, "an ISO-8601 date-time", value) from None
    if attr.kind == BYTES:
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _type_error(path, "base64-encoded bytes", value) from None
    return text


def _type_error(path: str, expected: str, value: Any) -> OracleError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return OracleError(
        400,
        f"The value {shown} of attribute {path} is not valid: it must be {expected}",
        "SBX-INVALID-VALUE",
        path,
    )
