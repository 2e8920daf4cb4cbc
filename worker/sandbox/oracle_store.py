"""In-memory Oracle records: interactions (top-level and child) and phoneCalls with transcripts.

Not locked itself: OracleSimulator holds its lock around every call.
"""

from __future__ import annotations

import copy
from typing import Any

from worker.sandbox.base import unique_id, utc_now
from worker.sandbox.oracle_schema import (
    INTERACTION_DEFAULTS,
    INTERACTION_WRITABLE,
    PHONE_CALL_WRITABLE,
    TRANSCRIPT_WRITABLE,
    OracleError,
)

FIRST_INTERACTION_ID = 300100000000001
# Separate ranges so an id of the wrong kind never accidentally finds a record.
FIRST_CALL_ID = 300100500000001
FIRST_MESSAGE_ID = 300100900000001

# Read-only attributes echoed in items (the docs' examples show them, mostly null here).
_INTERACTION_DISPLAY = (
    "ChannelDisplayName", "AccountPartyUniqueName", "ContactPartyUniqueName", "QueueName",
    "OwnerResourcePartyUniqueName", "NotifyFlag",
)  # fmt: skip


class OracleStore:
    def __init__(self) -> None:
        self.interactions: dict[int, dict[str, Any]] = {}
        self.phone_calls: dict[int, dict[str, Any]] = {}
        self._next_interaction = FIRST_INTERACTION_ID
        self._next_call = FIRST_CALL_ID
        self._next_message = FIRST_MESSAGE_ID
        self._message_ids: set[Any] = set()   # an index: a create must not scan every call

    # --- interactions -----------------------------------------------------------------
    def create_interaction(
        self, fields: dict[str, Any], user: str, parent_id: int | None = None
    ) -> dict[str, Any]:
        now = utc_now()
        iid = self._next_interaction
        self._next_interaction += 1
        record: dict[str, Any] = {"InteractionId": iid}
        record.update(dict.fromkeys(INTERACTION_WRITABLE))
        record.update(dict.fromkeys(_INTERACTION_DISPLAY))
        record.update(INTERACTION_DEFAULTS)
        record.update(fields)
        record["ParentInteractionId"] = iid if parent_id is None else parent_id
        record["TopLevelFlag"] = "true" if parent_id is None else "false"
        # Documented: StartInteractionFlag (default true) starts the interaction if not started.
        if record["StartTime"] is None and fields.get("StartInteractionFlag") is not False:
            record["StartTime"] = now
        if fields.get("EndInteractionFlag") and record["EndTime"] is None:
            record["EndTime"] = now
        record.update(CreatedBy=user, CreationDate=now, UpdateFlag="true", DeleteFlag="true")
        self._touch(record, user, now)
        self.interactions[iid] = record
        return record

    def update_interaction(self, iid: int, fields: dict[str, Any], user: str) -> dict[str, Any]:
        record = self.interaction(iid)
        now = utc_now()
        record.update(fields)
        # Documented: EndInteractionFlag sets EndTime to now without closing the interaction.
        if fields.get("EndInteractionFlag") and "EndTime" not in fields:
            record["EndTime"] = now
        self._touch(record, user, now)
        return record

    def interaction(self, iid: int) -> dict[str, Any]:
        record = self.interactions.get(iid)
        if record is None:
            raise OracleError(
                404,
                f"The interaction {iid} does not exist in resource interactions",
                "SBX-NOT-FOUND",
                "InteractionId",
            )
        return record

    def children(self, iid: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self.interactions.values()
            if r["ParentInteractionId"] == iid and r["InteractionId"] != iid
        ]

    # --- phone calls --------------------------------------------------------------------
    def create_phone_call(
        self, fields: dict[str, Any], messages: list[dict[str, Any]], user: str
    ) -> dict[str, Any]:
        interaction_id = fields["InteractionId"]
        self._check_message_ids(messages)
        now = utc_now()
        call_id = self._next_call
        self._next_call += 1
        record: dict[str, Any] = {"CallId": call_id}
        record.update(dict.fromkeys(PHONE_CALL_WRITABLE))
        record.update(DeletedFlag=False, CallNumber=str(call_id))
        record.update(fields)
        record.update(CreatedBy=user, CreationDate=now)
        self._touch(record, user, now)
        record["TranscriptMessage"] = [
            self._new_message(message, call_id, interaction_id, user, now) for message in messages
        ]
        self.phone_calls[call_id] = record
        self._message_ids.update(m["MessageId"] for m in record["TranscriptMessage"])
        return record

    def phone_call(self, call_id: int) -> dict[str, Any]:
        record = self.phone_calls.get(call_id)
        if record is None:
            raise OracleError(
                404,
                f"The phone call {call_id} does not exist in resource phoneCalls",
                "SBX-NOT-FOUND",
                "CallId",
            )
        return record

    def snapshot(self) -> dict[str, Any]:
        return {
            "interactions": copy.deepcopy(list(self.interactions.values())),
            "phoneCalls": copy.deepcopy(list(self.phone_calls.values())),
        }

    def _new_message(
        self, fields: dict[str, Any], call_id: int, interaction_id: int, user: str, now: str
    ) -> dict[str, Any]:
        message_id = fields.get("MessageId")
        if message_id is None:
            message_id = self._next_message
            self._next_message += 1
        message: dict[str, Any] = dict.fromkeys(TRANSCRIPT_WRITABLE)
        message.update(DeletedFlag=False, MessageNumber=str(message_id))
        message.update(fields)
        # The message belongs to the call it was posted under, whatever CallId the body said.
        message.update(
            MessageId=message_id,
            CallId=call_id,
            InteractionId=interaction_id,
            CreatedBy=user,
            CreationDate=now,
        )
        self._touch(message, user, now)
        return message

    def _check_message_ids(self, messages: list[dict[str, Any]]) -> None:
        taken = self._message_ids
        for index, message in enumerate(messages):
            mid = message.get("MessageId")
            if mid is not None and mid in taken:
                path = f"TranscriptMessage[{index}].MessageId"
                raise OracleError(
                    400,
                    f"The value {mid} of attribute {path} already exists",
                    "SBX-DUPLICATE-KEY",
                    path,
                )
            taken.add(mid)

    @staticmethod
    def _touch(record: dict[str, Any], user: str, now: str) -> None:
        # A uuid4 per write (once per record and per transcript message) took a sixth of the
        # simulator's time handling a request in the benchmark (py-spy).
        record.update(LastUpdatedBy=user, LastUpdateDate=now, LastUpdateLogin=unique_id().upper())
