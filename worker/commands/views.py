"""`callsync status`: a call's timeline as plain data (for --json) and as tables.

Never shows an event's payload: it holds the transcript, which stays out of every output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table

from worker.adapters.queries import Timeline
from worker.domain.events import Status


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment is not None else None


def _status_name(value: int | None) -> str | None:
    try:
        return Status(value).name if value is not None else None
    except ValueError:
        return str(value)


def status_view(t: Timeline) -> dict[str, Any] | None:
    if t.call is None and not t.events:
        return None
    legs = {row.leg: row for row in t.legs}
    error = next((row.error for row in t.legs if row.error), None)
    if t.call is None:   # only rejected input was ever seen for this id
        error = next((e.error for e in reversed(t.events) if e.error), None)

    def remote(name: str) -> str | None:
        row = legs.get(name)
        return row.remote_id if row is not None and row.state == "done" else None

    events = [{"at": _iso(e.received_at), "kind": "event", "outcome": e.outcome,
               "status": _status_name(e.status), "source": e.source, "task_id": e.task_id,
               "error": e.error} for e in t.events]
    requests = [{"at": _iso(r.at), "kind": "request", "leg": r.leg, "crm": r.crm,
                 "method": r.method, "path": r.path, "status": r.status_code,
                 "duration_ms": round(r.duration_ms, 1), "error": r.error} for r in t.requests]
    return {
        "interaction_id": t.interaction_id,
        "thread": t.call.thread_key if t.call else None,
        "state": t.call.sync_state if t.call else "rejected",
        "status": _status_name(t.call.status) if t.call else None,
        "error": error,
        "records": {
            "oracle_interaction_id": remote("oracle_interaction"),
            "oracle_top_level_interaction_id": t.thread.top_level_interaction_id
            if t.thread else None,
            "oracle_phone_call_id": remote("oracle_phone_call"),
            "caliq_unique_id": remote("caliq"),
        },
        "legs": [{"leg": row.leg, "state": row.state, "remote_id": row.remote_id,
                  "attempts": row.attempts, "error": row.error, "error_kind": row.error_kind,
                  "next_attempt_at": _iso(row.next_attempt_at),
                  "updated_at": _iso(row.updated_at)} for row in t.legs],
        "thread_calls": [{"interaction_id": i, "state": s} for i, s in t.thread_calls],
        "lease_owner": t.thread.lease_owner if t.thread else None,
        # Events and requests in the order they happened (events first on a tie).
        "timeline": sorted([*events, *requests], key=lambda item: item["at"] or ""),
    }


def print_status(console: Any, view: dict[str, Any]) -> None:
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"call {view['interaction_id']}   thread {view['thread']}   state {view['state']}   "
        f"genesys status {view['status']}")
    records = view["records"]
    say("records: " + "   ".join(f"{k}={v}" for k, v in records.items() if v is not None))
    if view["error"]:
        say(f"error: {view['error']}")
    others = [c for c in view["thread_calls"] if c["interaction_id"] != view["interaction_id"]]
    if others:
        say("thread: " + ", ".join(f"{c['interaction_id']} ({c['state']})" for c in others))
    legs = Table(title="legs")
    for column in ("leg", "state", "remote id", "attempts", "next attempt", "error"):
        legs.add_column(column, overflow="fold")
    for leg in view["legs"]:
        legs.add_row(leg["leg"], leg["state"], leg["remote_id"] or "", str(leg["attempts"]),
                     leg["next_attempt_at"] or "", leg["error"] or "")
    console.print(legs)
    timeline = Table(title="timeline")
    for column in ("at", "what", "detail"):
        timeline.add_column(column, overflow="fold")
    for item in view["timeline"]:
        if item["kind"] == "event":
            what = f"event {item['status'] or ''} {item['outcome']}"
            detail = f"{item['source']} task {item['task_id'] or '-'} {item['error'] or ''}"
        else:
            what = f"{item['crm']} {item['method']} {item['path']}"
            detail = (f"{item['status'] or 'no answer'} in {item['duration_ms']} ms "
                      f"({item['leg']}) {item['error'] or ''}")
        timeline.add_row(item["at"], what, detail.strip())
    console.print(timeline)
