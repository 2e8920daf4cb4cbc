"""Oracle Fusion Service REST (`/crmRestApi/resources/<version>/`): interactions and phoneCalls."""

from __future__ import annotations

from typing import Any

import requests

from worker.adapters.http import ErrorKind, JsonHttp, Limiter, Recorder, RemoteError

ITEM_TYPE = "application/vnd.oracle.adf.resourceitem+json"


def describe_oracle_error(response: requests.Response) -> str:
    """Oracle's own words: `o:errorDetails` (framework 4+), else `detail`/`title`, else text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict):
        details = [
            d.get("detail") for d in body.get("o:errorDetails") or [] if isinstance(d, dict)
        ]
        details = [d for d in details if d]
        if details:
            return "; ".join(details)[:500]
        for key in ("detail", "title"):
            if body.get(key):
                return str(body[key])[:500]
    return response.text.strip()[:500]


class OracleClient:
    def __init__(
        self, api_root: str, *, username: str | None = None, password: str | None = None,
        token: str | None = None, framework_version: int = 4,
        timeout: tuple[float, float] = (5.0, 30.0), limiter: Limiter | None = None,
        pool_size: int = 32,
    ) -> None:
        headers = {
            "REST-Framework-Version": str(framework_version),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        auth = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            auth = (username or "", password or "")
        self.http = JsonHttp("oracle", api_root, timeout=timeout, headers=headers, auth=auth,
                             limiter=limiter, pool_size=pool_size)

    def _send(self, method: str, path: str, recorder: Recorder | None, **kw: Any) -> Any:
        response = self.http.request(
            method, path, recorder=recorder, describe_error=describe_oracle_error, **kw
        )
        return response.json() if response.content else {}

    def create_interaction(self, body: dict[str, Any], recorder: Recorder | None = None) -> int:
        return self._id(self._send("POST", "interactions", recorder, json_body=body),
                        "InteractionId")

    def create_child_interaction(
        self, parent_id: int, body: dict[str, Any], recorder: Recorder | None = None
    ) -> int:
        path = f"interactions/{parent_id}/child/childInteractions"
        return self._id(self._send("POST", path, recorder, json_body=body), "InteractionId")

    def update_interaction(
        self, interaction_id: int, body: dict[str, Any], recorder: Recorder | None = None
    ) -> None:
        # Child interactions are interactions too; their own id addresses them here, which
        # avoids the hashed childInteractions item key the documents warn clients not to build.
        self._send("PATCH", f"interactions/{interaction_id}", recorder, json_body=body)

    def find_interaction(
        self, media_item_id: str, recorder: Recorder | None = None
    ) -> int | None:
        params = {
            "finder": f"InteractionRowFinderByMediaItemId;BindMediaItemId={media_item_id}",
            "onlyData": "true", "limit": "2",
        }
        return self._first_id(self._send("GET", "interactions", recorder, params=params),
                              "InteractionId")

    def create_phone_call(self, body: dict[str, Any], recorder: Recorder | None = None) -> int:
        return self._id(self._send("POST", "phoneCalls", recorder, json_body=body), "CallId")

    def find_phone_call(
        self, external_call_id: str, recorder: Recorder | None = None
    ) -> int | None:
        params = {"q": f"ExternalSystemCallId='{external_call_id}'", "onlyData": "true",
                  "limit": "2"}
        return self._first_id(self._send("GET", "phoneCalls", recorder, params=params), "CallId")

    def check(self) -> None:
        """A cheap authenticated read, for `callsync check`."""
        self._send("GET", "interactions", None, params={"limit": "1", "onlyData": "true"})

    @staticmethod
    def _id(body: Any, key: str) -> int:
        try:
            return int(body[key])
        except (KeyError, TypeError, ValueError):
            raise RemoteError(
                "oracle", ErrorKind.TRANSIENT, f"answer without {key}", maybe_applied=True
            ) from None

    @staticmethod
    def _first_id(body: Any, key: str) -> int | None:
        items = body.get("items") if isinstance(body, dict) else None
        if not items:
            return None
        return int(items[0][key])
