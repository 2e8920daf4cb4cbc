"""Server side of the /_sim/* admin endpoints (not part of either CRM; no auth)."""

from __future__ import annotations

from typing import Any

from worker.sandbox.base import Reply, Request, SimState


def admin_reply(state: SimState, request: Request) -> Reply:
    route = (request.method, request.path.rstrip("/"))
    try:
        if route == ("GET", "/_sim/state"):
            return Reply.json(200, state.snapshot())
        if route == ("GET", "/_sim/requests"):
            return Reply.json(200, state.request_log())
        if route == ("GET", "/_sim/faults"):
            return Reply.json(200, {"rules": state.faults.describe()})
        if route == ("GET", "/_sim/config"):
            return Reply.json(200, state.config())
        if route == ("POST", "/_sim/reset"):
            state.reset()
            return Reply.json(200, {"ok": True})
        if route == ("POST", "/_sim/faults"):
            rules = _object(request).get("rules", [])
            if not isinstance(rules, list):
                raise ValueError("'rules' must be a list")
            state.faults.replace(rules)
            return Reply.json(200, {"rules": state.faults.describe()})
        if route == ("POST", "/_sim/config"):
            with state.lock:
                state.configure(dict(_object(request)))
                return Reply.json(200, state.config())
    except (ValueError, TypeError) as exc:
        return Reply.json(400, {"error": str(exc)})
    return Reply.json(404, {"error": f"no admin endpoint {request.method} {request.path}"})


def _object(request: Request) -> dict[str, Any]:
    body = request.json_body() or {}
    if not isinstance(body, dict):
        raise ValueError("admin body must be a JSON object")
    return body
