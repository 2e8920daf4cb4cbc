"""Oracle Fusion Service simulator: auth, routing and ADF-style replies over ``OracleStore``."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from worker.sandbox import oracle_query as query
from worker.sandbox.base import Reply, Request, SimState
from worker.sandbox.oracle_schema import (
    INTERACTION_READ_ONLY,
    INTERACTION_WRITABLE,
    PHONE_CALL_READ_ONLY,
    PHONE_CALL_WRITABLE,
    TRANSCRIPT_READ_ONLY,
    TRANSCRIPT_WRITABLE,
    OracleError,
    check_body,
)
from worker.sandbox.oracle_store import OracleStore

ITEM_TYPE = "application/vnd.oracle.adf.resourceitem+json"
COLLECTION_TYPE = "application/vnd.oracle.adf.resourcecollection+json"
ERROR_TYPE = "application/vnd.oracle.adf.error+json"
_ROOT = re.compile(r"^/crmRestApi/resources/([^/]+)(?:/(.*))?$")
INTERACTION_QUERYABLE = (set(INTERACTION_WRITABLE) | INTERACTION_READ_ONLY) - {"links"}
PHONE_CALL_QUERYABLE = (set(PHONE_CALL_WRITABLE) | PHONE_CALL_READ_ONLY) - {
    "links",
    "CallRecording",
}
MESSAGES = "TranscriptMessage"


@dataclass
class Ctx:
    request: Request
    origin: str  # scheme://host the client used, so links point back at this server
    version: str
    user: str

    @property
    def base(self) -> str:
        return f"{self.origin}/crmRestApi/resources/{self.version}"

    @property
    def params(self) -> dict[str, str]:
        return self.request.params()


def framework_version(request: Request) -> int:
    try:
        return int(request.headers.get("REST-Framework-Version", "1"))
    except ValueError:
        return 1


def error_reply(exc: OracleError, request: Request) -> Reply:
    """ADF error: detailed JSON from framework version 4 on, plain text before."""
    headers = {"WWW-Authenticate": 'Basic realm="sandbox"'} if exc.status == 401 else {}
    if framework_version(request) >= 4:
        detail = {"detail": exc.message, "o:errorCode": exc.code, "o:errorPath": exc.path}
        payload = {
            "title": HTTPStatus(exc.status).phrase,
            "status": str(exc.status),
            "o:errorDetails": [detail],
        }
        return Reply.json(exc.status, payload, ERROR_TYPE, headers)
    return Reply.text(exc.status, exc.message, headers)


class OracleSimulator(SimState):
    name = "oracle"

    def __init__(
        self,
        username: str = "sandbox",
        password: str = "sandbox-password",
        token: str = "sandbox-token",
        latency_ms: float = 0,
    ) -> None:
        super().__init__(latency_ms)
        self.username, self.password, self.token = username, password, token
        self.store = OracleStore()
        Route = tuple[str, str, Callable[..., Reply]]
        routes: list[Route] = [
            ("GET", r"", self._root),
            ("GET", r"interactions", self._list_interactions),
            ("POST", r"interactions", self._create_interaction),
            ("GET", r"interactions/(\d+)", self._get_interaction),
            ("PATCH", r"interactions/(\d+)", self._patch_interaction),
            ("GET", r"interactions/(\d+)/child/childInteractions", self._list_children),
            ("POST", r"interactions/(\d+)/child/childInteractions", self._create_child),
            ("GET", r"interactions/(\d+)/child/childInteractions/(\d+)", self._get_child),
            ("PATCH", r"interactions/(\d+)/child/childInteractions/(\d+)", self._patch_child),
            ("GET", r"phoneCalls", self._list_calls),
            ("POST", r"phoneCalls", self._create_call),
            ("GET", r"phoneCalls/(\d+)", self._get_call),
            ("GET", r"phoneCalls/(\d+)/child/TranscriptMessage", self._list_messages),
        ]
        self._routes = [(method, re.compile(pattern), fn) for method, pattern, fn in routes]

    # --- SimState ---------------------------------------------------------------------
    def clear_records(self) -> None:
        self.store = OracleStore()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.store.snapshot()

    def configure(self, options: dict[str, Any]) -> None:
        for key in ("username", "password", "token"):
            if key in options:
                setattr(self, key, str(options.pop(key)))
        super().configure(options)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "username": self.username}

    def fault_reply(self, request: Request, status: int, message: str) -> Reply:
        return error_reply(OracleError(status, message, f"SBX-FAULT-{status}"), request)

    def handle(self, request: Request) -> Reply:
        try:
            match = _ROOT.match(request.path)
            if not match:
                raise OracleError(404, f"The resource {request.path} is not found", "SBX-NO-PATH")
            user = self._authenticate(request)
            version, rest = match.group(1), (match.group(2) or "").strip("/")
            host = request.headers.get("Host", "localhost")
            ctx = Ctx(request, f"http://{host}", version, user)
            with self.lock:
                return self._route(ctx, rest)
        except OracleError as exc:
            return error_reply(exc, request)

    # --- plumbing -----------------------------------------------------------------------
    def _authenticate(self, request: Request) -> str:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            if user == self.username and password == self.password:
                return user.upper()
        elif scheme.lower() == "bearer" and credentials.strip() == self.token:
            return self.username.upper()
        raise OracleError(
            401, "Authentication failed: missing or invalid credentials", "SBX-UNAUTHORIZED"
        )

    def _route(self, ctx: Ctx, rest: str) -> Reply:
        known_path = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(rest)
            if match:
                known_path = True
                if method == ctx.request.method:
                    return handler(ctx, *(int(group) for group in match.groups()))
        if known_path:
            raise OracleError(
                405, f"Method {ctx.request.method} is not allowed on {rest}", "SBX-METHOD"
            )
        raise OracleError(404, f"The resource {ctx.request.path} is not found", "SBX-NO-PATH")

    @staticmethod
    def _body(ctx: Ctx) -> Any:
        content_type = ctx.request.headers.get("Content-Type", "")
        if ctx.request.body and "json" not in content_type:
            raise OracleError(415, f"Unsupported media type {content_type!r}", "SBX-MEDIA-TYPE")
        try:
            return ctx.request.json_body()
        except (ValueError, UnicodeDecodeError) as exc:
            raise OracleError(
                400, f"The request body is not valid JSON: {exc}", "SBX-BAD-JSON"
            ) from None

    # --- rendering ----------------------------------------------------------------------
    def _interaction(
        self, ctx: Ctx, record: dict[str, Any], only_data: bool = False, href: str | None = None
    ) -> dict[str, Any]:
        item = dict(record)
        if not only_data:
            canonical = f"{ctx.base}/interactions/{record['InteractionId']}"
            item["links"] = [
                {"rel": "self", "href": href or canonical, "name": "interactions", "kind": "item"},
                {"rel": "canonical", "href": canonical, "name": "interactions", "kind": "item"},
                {
                    "rel": "child",
                    "href": f"{canonical}/child/childInteractions",
                    "name": "childInteractions",
                    "kind": "collection",
                },
                {
                    "rel": "enclosure",
                    "href": f"{canonical}/enclosure/Payload",
                    "name": "Payload",
                    "kind": "other",
                },
            ]
        return item

    def _call(
        self, ctx: Ctx, record: dict[str, Any], only_data: bool = False, with_messages: bool = False
    ) -> dict[str, Any]:
        item = {k: v for k, v in record.items() if k != MESSAGES}
        href = f"{ctx.base}/phoneCalls/{record['CallId']}"
        if with_messages:
            item[MESSAGES] = [self._message(ctx, m, only_data) for m in record[MESSAGES]]
        if not only_data:
            item["links"] = [
                {"rel": "self", "href": href, "name": "phoneCalls", "kind": "item"},
                {"rel": "canonical", "href": href, "name": "phoneCalls", "kind": "item"},
                {
                    "rel": "child",
                    "href": f"{href}/child/{MESSAGES}",
                    "name": MESSAGES,
                    "kind": "collection",
                },
            ]
        return item

    @staticmethod
    def _message(ctx: Ctx, message: dict[str, Any], only_data: bool = False) -> dict[str, Any]:
        item = dict(message)
        if not only_data:
            call = f"{ctx.base}/phoneCalls/{message['CallId']}"
            href = f"{call}/child/{MESSAGES}/{message['MessageId']}"
            item["links"] = [{"rel": "self", "href": href, "name": MESSAGES, "kind": "item"}]
        return item

    def _created(self, item: dict[str, Any]) -> Reply:
        location = item["links"][0]["href"]
        return Reply.json(201, item, ITEM_TYPE, {"Location": location})

    def _collection(
        self,
        ctx: Ctx,
        rows: list[dict[str, Any]],
        render: Callable[[dict[str, Any], bool], dict[str, Any]],
    ) -> Reply:
        self_href = ctx.origin + ctx.request.path
        return Reply.json(200, query.page(rows, ctx.params, self_href, render), COLLECTION_TYPE)

    # --- interactions -------------------------------------------------------------------
    def _root(self, ctx: Ctx) -> Reply:
        links = [
            {"rel": "child", "href": f"{ctx.base}/{name}", "name": name, "kind": "collection"}
            for name in ("interactions", "phoneCalls")
        ]
        return Reply.json(200, {"name": "sandbox-crmRestApi", "user": ctx.user, "links": links})

    def _list_interactions(self, ctx: Ctx) -> Reply:
        rows = list(self.store.interactions.values())
        params = ctx.params
        if params.get("finder"):
            rows = self._apply_finder(params["finder"], rows)
        if params.get("q"):
            terms = query.parse_q(params["q"], INTERACTION_QUERYABLE, "interactions")
            rows = [row for row in rows if query.matches(row, terms)]
        return self._collection(ctx, rows, lambda r, only: self._interaction(ctx, r, only))

    @staticmethod
    def _apply_finder(finder: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        name, binds = query.parse_finder(finder)
        if name == "InteractionRowFinderByMediaItemId" and "BindMediaItemId" in binds:
            return [r for r in rows if r["MediaItemId"] == binds["BindMediaItemId"]]
        if name == "InteractionRowFinderById" and "BindInteractionId" in binds:
            terms = [("InteractionId", binds["BindInteractionId"])]
            if "BindStripeCd" in binds:
                terms.append(("StripeCd", binds["BindStripeCd"]))
            return [r for r in rows if query.matches(r, terms)]
        raise OracleError(
            400,
            f"The finder {finder!r} is not found in resource interactions "
            "or lacks its bind variable",
            "SBX-BAD-FINDER",
            "finder",
        )

    def _interaction_fields(self, ctx: Ctx) -> dict[str, Any]:
        return check_body(
            self._body(ctx), INTERACTION_WRITABLE, INTERACTION_READ_ONLY, "interactions"
        )

    def _create_interaction(self, ctx: Ctx) -> Reply:
        fields = self._interaction_fields(ctx)
        if fields.get("ParentInteractionId") is not None:
            raise OracleError(
                400,
                "Attribute ParentInteractionId in resource interactions can "
                "only be set when creating a child interaction through "
                "childInteractions",
                "SBX-READ-ONLY",
                "ParentInteractionId",
            )
        fields.pop("ParentInteractionId", None)
        record = self.store.create_interaction(fields, ctx.user)
        return self._created(self._interaction(ctx, record))

    def _get_interaction(self, ctx: Ctx, iid: int) -> Reply:
        record = self.store.interaction(iid)
        only = ctx.params.get("onlyData", "").lower() == "true"
        return Reply.json(200, self._interaction(ctx, record, only), ITEM_TYPE)

    def _patch_interaction(self, ctx: Ctx, iid: int, href: str | None = None) -> Reply:
        self.store.interaction(iid)  # 404 before validating, as for a missing item
        fields = self._interaction_fields(ctx)
        if "ParentInteractionId" in fields:
            raise OracleError(
                400,
                "Attribute ParentInteractionId in resource interactions is not updatable",
                "SBX-READ-ONLY",
                "ParentInteractionId",
            )
        record = self.store.update_interaction(iid, fields, ctx.user)
        return Reply.json(200, self._interaction(ctx, record, href=href), ITEM_TYPE)

    def _list_children(self, ctx: Ctx, iid: int) -> Reply:
        rows = self.store.children(self.store.interaction(iid)["InteractionId"])
        if ctx.params.get("q"):
            terms = query.parse_q(ctx.params["q"], INTERACTION_QUERYABLE, "childInteractions")
            rows = [row for row in rows if query.matches(row, terms)]
        return self._collection(ctx, rows, lambda r, only: self._interaction(ctx, r, only))

    def _create_child(self, ctx: Ctx, iid: int) -> Reply:
        self.store.interaction(iid)
        fields = self._interaction_fields(ctx)
        given = fields.pop("ParentInteractionId", None)
        if given is not None and given != iid:
            raise OracleError(
                400,
                f"Attribute ParentInteractionId ({given}) does not match the "
                f"parent interaction {iid} in the path",
                "SBX-INVALID-VALUE",
                "ParentInteractionId",
            )
        record = self.store.create_interaction(fields, ctx.user, parent_id=iid)
        href = f"{ctx.base}/interactions/{iid}/child/childInteractions/{record['InteractionId']}"
        return self._created(self._interaction(ctx, record, href=href))

    def _child(self, parent_id: int, child_id: int) -> dict[str, Any]:
        self.store.interaction(parent_id)
        child = self.store.interactions.get(child_id)
        if child is None or child["ParentInteractionId"] != parent_id or child_id == parent_id:
            raise OracleError(
                404,
                f"The child interaction {child_id} does not exist under interaction {parent_id}",
                "SBX-NOT-FOUND",
                "InteractionId",
            )
        return child

    def _get_child(self, ctx: Ctx, parent_id: int, child_id: int) -> Reply:
        return Reply.json(200, self._interaction(ctx, self._child(parent_id, child_id)), ITEM_TYPE)

    def _patch_child(self, ctx: Ctx, parent_id: int, child_id: int) -> Reply:
        self._child(parent_id, child_id)
        href = f"{ctx.base}/interactions/{parent_id}/child/childInteractions/{child_id}"
        return self._patch_interaction(ctx, child_id, href=href)

    # --- phone calls --------------------------------------------------------------------
    def _list_calls(self, ctx: Ctx) -> Reply:
        rows = list(self.store.phone_calls.values())
        if ctx.params.get("finder"):
            raise OracleError(
                400,
                f"The finder {ctx.params['finder']!r} is not found in resource phoneCalls",
                "SBX-BAD-FINDER",
                "finder",
            )
        if ctx.params.get("q"):
            terms = query.parse_q(ctx.params["q"], PHONE_CALL_QUERYABLE, "phoneCalls")
            rows = [row for row in rows if query.matches(row, terms)]
        expand = _expands_messages(ctx)
        return self._collection(ctx, rows, lambda r, only: self._call(ctx, r, only, expand))

    def _create_call(self, ctx: Ctx) -> Reply:
        body = self._body(ctx)
        fields = check_body(
            body,
            PHONE_CALL_WRITABLE,
            PHONE_CALL_READ_ONLY,
            "phoneCalls",
            skip=frozenset({MESSAGES}),
        )
        raw_messages = fields.pop(MESSAGES, None) or []
        if not isinstance(raw_messages, list):
            raise OracleError(
                400,
                f"Attribute {MESSAGES} in resource phoneCalls must be an array",
                "SBX-INVALID-VALUE",
                MESSAGES,
            )
        messages = [
            check_body(
                message,
                TRANSCRIPT_WRITABLE,
                TRANSCRIPT_READ_ONLY,
                "phoneCalls",
                prefix=f"{MESSAGES}[{index}].",
            )
            for index, message in enumerate(raw_messages)
        ]
        interaction_id = fields.get("InteractionId")
        if interaction_id is None:
            raise OracleError(
                400,
                "Attribute InteractionId in resource phoneCalls is required",
                "SBX-REQUIRED",
                "InteractionId",
            )
        if interaction_id not in self.store.interactions:
            raise OracleError(
                400,
                f"The value {interaction_id} of attribute InteractionId does "
                "not exist: no such interaction",
                "SBX-INVALID-VALUE",
                "InteractionId",
            )
        record = self.store.create_phone_call(fields, messages, ctx.user)
        return self._created(self._call(ctx, record, with_messages=True))

    def _get_call(self, ctx: Ctx, call_id: int) -> Reply:
        only = ctx.params.get("onlyData", "").lower() == "true"
        item = self._call(ctx, self.store.phone_call(call_id), only, _expands_messages(ctx))
        return Reply.json(200, item, ITEM_TYPE)

    def _list_messages(self, ctx: Ctx, call_id: int) -> Reply:
        rows = self.store.phone_call(call_id)[MESSAGES]
        return self._collection(ctx, rows, lambda m, only: self._message(ctx, m, only))


def _expands_messages(ctx: Ctx) -> bool:
    """Children are only inlined when asked for with expand, as in ADF."""
    expand = {part.strip() for part in ctx.params.get("expand", "").split(",")}
    return bool(expand & {"all", MESSAGES})
