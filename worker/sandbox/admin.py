"""Client for a simulator's /_sim/* admin endpoints (tests, the demo and the benchmark use it)."""

from __future__ import annotations

from typing import Any

import requests


class SimulatorAdmin:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def state(self) -> dict[str, Any]:
        return self._call("GET", "state")

    def requests_log(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")["rules"]

    def reset(self) -> None:
        self._call("POST", "reset")

    def set_faults(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("POST", "faults", {"rules": rules})["rules"]

    def configure(self, **options: Any) -> dict[str, Any]:
        return self._call("POST", "config", options)

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        response = self._session.request(
            method, f"{self.base_url}/_sim/{name}", json=body, timeout=self.timeout
        )
        response.raise_for_status()
        return response.json()
