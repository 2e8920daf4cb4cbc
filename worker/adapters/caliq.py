"""Caliq's InteractionCreate. The apiKey travels in the body, so bodies are never logged."""

from __future__ import annotations

import re
from typing import Any

import requests

from worker.adapters.http import ErrorKind, JsonHttp, Limiter, Recorder, RemoteError


def describe_caliq_error(response: requests.Response) -> str:
    return response.text.strip()[:300] or response.reason


class CaliqClient:
    def __init__(
        self, root: str, *, api_key: str, duplicate_pattern: str = "already exists",
        timeout: tuple[float, float] = (5.0, 30.0), limiter: Limiter | None = None,
        pool_size: int = 32,
    ) -> None:
        self.api_key = api_key
        self.duplicate = re.compile(duplicate_pattern, re.IGNORECASE)
        self.http = JsonHttp(
            "caliq", root, timeout=timeout,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            limiter=limiter, pool_size=pool_size,
        )

    def create_interaction(self, body: dict[str, Any], recorder: Recorder | None = None) -> None:
        """Create it; an answer that the UniqueID already exists means an earlier try landed."""
        response = self.http.request(
            "POST", "api/v1/InteractionCreate", recorder=recorder,
            json_body={"apiKey": self.api_key, **body}, describe_error=describe_caliq_error,
        )
        data = _json(response).get("InteractionAddData") or {}
        if data.get("OK") is True:
            return
        issues = [i for i in data.get("InteractionCreateIssues") or [] if isinstance(i, dict)]
        messages = [str(i.get("Message", "")) for i in issues]
        if messages and all(self.duplicate.search(m) for m in messages):
            return
        text = "; ".join(
            f"{i.get('Message')}" + (f" ({i.get('ExtraData')})" if i.get("ExtraData") else "")
            for i in issues
        ) or "OK:false without issues"
        raise RemoteError("caliq", ErrorKind.PERMANENT, f"Caliq refused: {text}")

    def channels(self) -> dict[int, str]:
        """The documented Channel list: proves the URL and the apiKey, for `callsync check`."""
        response = self.http.request("POST", "api/v1/Channel", json_body={"apiKey": self.api_key},
                                     describe_error=describe_caliq_error)
        listed = _json(response).get("ChannelList") or []
        return {int(c["ID"]): str(c.get("Description", "")) for c in listed if "ID" in c}


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise RemoteError("caliq", ErrorKind.TRANSIENT, "answer is not JSON",
                          maybe_applied=True) from None
    return body if isinstance(body, dict) else {}
