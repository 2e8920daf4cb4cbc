"""Caliq CRM simulator (https://api.caliq.com/Help): POST-only JSON API with the apiKey in the body.

Validation follows the InteractionCreateParams model in /work/shared/api-docs/caliq-interaction-
create.txt; business failures answer 200 with ``OK: false`` and issues, as the documented
response shape implies, while a bad key is 401 and an unreadable body 400.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from worker.sandbox.base import Reply, Request, SimState, utc_now

DUPLICATE_MESSAGE = "Interaction with this UniqueID already exists"
DEFAULT_CHANNELS = ({"ID": 1, "Description": "Phone"}, {"ID": 2, "Description": "Email"})
DEFAULT_EMPLOYEES = ({"ID": "E100", "Name": "Sandbox Agent"},)
# InteractionCreateParams: name -> (type, max length)
FIELDS: dict[str, tuple[type, int | None]] = {
    "apiKey": (str, None),
    "ChannelID": (int, None),
    "CustomerID": (int, None),
    "AccountNo": (str, 10),
    "ContactID": (int, None),
    "UniqueID": (str, None),
    "Kind": (str, 1),
    "ContactedBy": (str, 10),
    "ContactedFirstName": (str, 50),
    "ContactedSurname": (str, 50),
    "OnDateTime": (str, None),
    "Notes": (str, None),
    "FollowUpDateTime": (str, None),
    "FollowUpBy": (str, 10),
    "FollowUpNotes": (str, None),
}
KINDS = frozenset({"C", "E", "V"})


class CaliqSimulator(SimState):
    name = "caliq"

    def __init__(self, api_key: str = "sandbox-key", latency_ms: float = 0) -> None:
        super().__init__(latency_ms)
        self.api_key = api_key
        self.channels: list[dict[str, Any]] = [dict(c) for c in DEFAULT_CHANNELS]
        # None = any customer exists; a set limits CustomerID / AccountNo to known values.
        self.customers: set[int | str] | None = None
        self.interactions: list[dict[str, Any]] = []
        self._unique_ids: set[Any] = set()   # an index: a create must not scan every record

    # --- SimState ---------------------------------------------------------------------
    def clear_records(self) -> None:
        self.interactions = []
        self._unique_ids = set()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"interactions": copy.deepcopy(self.interactions)}

    def configure(self, options: dict[str, Any]) -> None:
        if "api_key" in options:
            self.api_key = str(options.pop("api_key"))
        if "channels" in options:
            self.channels = [
                {"ID": int(c["ID"]), "Description": str(c["Description"])}
                for c in options.pop("channels")
            ]
        if "customers" in options:
            customers = options.pop("customers")
            self.customers = None if customers is None else set(customers)
        super().configure(options)

    def config(self) -> dict[str, Any]:
        customers = None if self.customers is None else sorted(self.customers, key=str)
        return {**super().config(), "channels": self.channels, "customers": customers}

    def fault_reply(self, request: Request, status: int, message: str) -> Reply:
        return Reply.json(status, {"Message": message})

    def handle(self, request: Request) -> Reply:
        endpoint = request.path.rstrip("/").lower()
        handlers = {
            "/api/v1/interactioncreate": self._interaction_create,
            "/api/v1/channel": lambda body: {"ChannelList": list(self.channels)},
            "/api/v1/employee": lambda body: {"EmployeeList": [dict(e) for e in DEFAULT_EMPLOYEES]},
            "/api/v1/pulse": lambda body: {"Pulse": _seconds_since_midnight()},
        }
        handler = handlers.get(endpoint)
        if handler is None:
            return Reply.json(404, {"Message": f"No HTTP resource was found for {request.path}"})
        if request.method != "POST":
            return Reply.json(
                405,
                {
                    "Message": f"The requested resource does not support "
                    f"http method '{request.method}'."
                },
            )
        try:
            body = request.json_body()
        except (ValueError, UnicodeDecodeError):
            return Reply.json(400, {"Message": "The request is invalid: body is not JSON."})
        if not isinstance(body, dict):
            return Reply.json(400, {"Message": "The request is invalid: expected a JSON object."})
        if body.get("apiKey") != self.api_key:
            return Reply.json(401, {"Message": "Authorization has been denied for this request."})
        with self.lock:
            return Reply.json(200, handler(body))

    # --- InteractionCreate ------------------------------------------------------------
    def _interaction_create(self, body: dict[str, Any]) -> dict[str, Any]:
        issues = self._issues(body)
        if not issues and body["UniqueID"] in self._unique_ids:
            issues.append((DUPLICATE_MESSAGE, str(body["UniqueID"])))
        if not issues:
            record = {k: v for k, v in body.items() if k != "apiKey"}
            record.update(InteractionID=len(self.interactions) + 1, CreatedAt=utc_now())
            self.interactions.append(record)
            self._unique_ids.add(body["UniqueID"])
        numbered = [{"ID": n, "Message": m, "ExtraData": x} for n, (m, x) in enumerate(issues, 1)]
        return {"InteractionAddData": {"OK": not issues, "InteractionCreateIssues": numbered}}

    def _issues(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        issues: list[tuple[str, str]] = []
        for name, value in body.items():
            if name not in FIELDS:
                issues.append((f"Unknown field {name}", name))
            elif value is not None:
                issues.extend(_type_issues(name, value))

        def present(name: str) -> bool:
            return body.get(name) not in (None, "")

        channel = body.get("ChannelID")
        if not present("ChannelID"):
            issues.append(("ChannelID is required", "ChannelID"))
        elif _is_int(channel) and channel not in {c["ID"] for c in self.channels}:
            issues.append(("Unknown ChannelID", str(channel)))
        if not present("CustomerID") and not present("AccountNo"):
            issues.append(("CustomerID or AccountNo is required", "CustomerID"))
        elif self.customers is not None and not self._known_customer(body):
            issues.append(("Customer not found", str(body.get("CustomerID") or body["AccountNo"])))
        if not present("UniqueID"):
            issues.append(("UniqueID is required", "UniqueID"))
        if not present("Kind"):
            issues.append(("Kind is required", "Kind"))
        elif body["Kind"] not in KINDS:
            issues.append(("Kind must be one of C, E, V", str(body["Kind"])))
        if not present("ContactedBy"):
            issues.append(("ContactedBy is required", "ContactedBy"))
        if not present("ContactID"):
            for name in ("ContactedFirstName", "ContactedSurname"):
                if not present(name):
                    issues.append((f"{name} is required when ContactID is not set", name))
        return issues

    def _known_customer(self, body: dict[str, Any]) -> bool:
        assert self.customers is not None
        return any(
            body.get(k) in self.customers for k in ("CustomerID", "AccountNo") if body.get(k)
        )


def _type_issues(name: str, value: Any) -> list[tuple[str, str]]:
    kind, max_length = FIELDS[name]
    if kind is int and not _is_int(value):
        return [(f"{name} must be an integer", name)]
    if kind is str and not isinstance(value, str):
        return [(f"{name} must be a string", name)]
    if max_length is not None and len(value) > max_length:
        return [(f"{name} exceeds maximum length {max_length}", name)]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds_since_midnight() -> int:
    now = datetime.now()
    return now.hour * 3600 + now.minute * 60 + now.second
