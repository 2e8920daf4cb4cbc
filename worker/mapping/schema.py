"""Writable fields of each target, as documented (see /work/shared/api-docs).

Each field has a wire type, the documented maximum length (None = not documented) and a
`kind` saying how an over-long value is fitted:

- `text`: free text, truncated with a visible marker;
- `phone`: normalised (leading `+` and digits), then too long is an error;
- `identifier` / `code`: never altered, too long is an error (a cut id points elsewhere);
- `value`: not a string (integer, boolean, datetime, base64): type-checked only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["string", "integer", "boolean", "datetime", "base64"]
FieldKind = Literal["text", "phone", "identifier", "code", "value"]


@dataclass(frozen=True)
class TargetField:
    name: str
    type: FieldType
    max_length: int | None = None
    kind: FieldKind = "value"
    required: bool = False  # documented as mandatory in the request body


@dataclass(frozen=True)
class Target:
    name: str  # e.g. "oracle.interaction"
    label: str  # prefix of PayloadError messages
    title: str  # for MappingError: "unknown <title> field"
    fields: dict[str, TargetField]
    reserved: frozenset[str] = frozenset()  # set by callsync itself, never by a mapping file


def _fields(*items: TargetField) -> dict[str, TargetField]:
    return {f.name: f for f in items}


def _int(name: str, required: bool = False) -> TargetField:
    return TargetField(name, "integer", required=required)


def _bool(name: str) -> TargetField:
    return TargetField(name, "boolean")


def _str(name: str, max_length: int | None, kind: FieldKind, required: bool = False) -> TargetField:
    return TargetField(name, "string", max_length, kind, required)


# Interactions and child interactions share one attribute set (create and PATCH).
# Attribute names are from the response examples and the research notes (section A); the docs
# show only titles for InteractionNumber, QueueNumber, SourceCd and StartInteractionFlag, whose
# names follow the ADF naming pattern. The Y/N "manually created" and "Marketing Reference ID"
# attributes are left out: their attribute names are not documented.
ORACLE_INTERACTION = Target(
    name="oracle.interaction",
    label="oracle.interaction",
    title="Oracle interaction",
    fields=_fields(
        _int("AccountPartyId"),
        _str("AgentHTTPSessionId", 100, "identifier"),
        _int("ChannelId"),
        _str("ChannelTypeCd", 30, "code"),
        _int("ContactPartyId"),
        _str("Description", 1000, "text"),
        _str("DirectionCd", 30, "code"),
        _bool("EndInteractionFlag"),
        TargetField("EndTime", "datetime"),
        _str("InteractionNumber", 30, "identifier"),
        _str("MediaItemId", 255, "identifier"),
        _str("OriginalSystemReference", 255, "identifier"),
        _int("OwnerResourceId"),
        _int("ParentInteractionId"),
        TargetField("Payload", "string", None, "text"),
        _int("QueueId"),
        _str("QueueNumber", 30, "identifier"),
        _str("SourceCd", 30, "code"),
        _bool("StartInteractionFlag"),
        TargetField("StartTime", "datetime"),
        _str("StatusCd", 30, "code"),
        _str("StripeCd", 30, "code"),
        _str("SubstatusCd", 30, "code"),
    ),
    # The caller posts to .../childInteractions instead of setting the parent by hand.
    reserved=frozenset({"ParentInteractionId"}),
)

# POST /phoneCalls. URLs are identifiers: a truncated URL is a broken link.
ORACLE_PHONE_CALL = Target(
    name="oracle.phone_call",
    label="oracle.phone_call",
    title="Oracle phoneCall",
    fields=_fields(
        _str("CallDetailsURL", 1000, "identifier"),
        _str("CallNumber", 30, "identifier"),
        TargetField("CallRecording", "base64"),
        _bool("DeletedFlag"),
        _str("ExternalSystemCallId", 255, "identifier"),
        _int("InteractionId", required=True),
        _bool("LeftMessageFlag"),
        _str("PhoneNumber", 30, "phone"),
        _str("RecordingFormat", 64, "code"),
        _str("RecordingURL", 1000, "identifier"),
        _str("TranscriptURL", 1000, "identifier"),
    ),
    reserved=frozenset({"InteractionId"}),  # from the interaction callsync just created
)

# One item of the phoneCall's TranscriptMessage array. RoleCd/VisibilityCd are lookup codes
# whose valid values are not in the REST docs (the table doc says VisibilityCd INTERNAL/EXTERNAL).
ORACLE_TRANSCRIPT_MESSAGE = Target(
    name="oracle.transcript_message",
    label="oracle.transcript_message",
    title="Oracle TranscriptMessage",
    fields=_fields(
        _int("CallId"),
        _bool("DeletedFlag"),
        TargetField("MessageContent", "base64"),
        _int("MessageId"),
        _str("MessageNumber", 30, "identifier"),
        _str("MessageTypeCd", 30, "code"),
        _str("PostedByDisplayName", 64, "text"),
        _str("PostedByPartyId", 30, "identifier"),
        _str("RoleCd", 30, "code"),
        _str("VisibilityCd", 30, "code"),
    ),
)

# POST api/v1/InteractionCreate, without apiKey (the client adds it, so it is not mappable).
# The conditional requirements (CustomerID or AccountNo; names when no ContactID) are checked
# in render.py; the unconditional ones are flagged here.
CALIQ_INTERACTION_CREATE = Target(
    name="caliq.interaction_create",
    label="caliq",
    title="Caliq InteractionCreate",
    fields=_fields(
        _int("ChannelID", required=True),
        _int("CustomerID"),
        _str("AccountNo", 10, "identifier"),
        _int("ContactID"),
        _str("UniqueID", None, "identifier", required=True),
        _str("Kind", 1, "code", required=True),
        _str("ContactedBy", 10, "identifier", required=True),
        _str("ContactedFirstName", 50, "text"),
        _str("ContactedSurname", 50, "text"),
        TargetField("OnDateTime", "datetime"),
        _str("Notes", None, "text"),
        TargetField("FollowUpDateTime", "datetime"),
        _str("FollowUpBy", 10, "identifier"),
        _str("FollowUpNotes", None, "text"),
    ),
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        ORACLE_INTERACTION,
        ORACLE_PHONE_CALL,
        ORACLE_TRANSCRIPT_MESSAGE,
        CALIQ_INTERACTION_CREATE,
    )
}
