"""`call.summary`: a short, redacted, human line about one call, for Caliq Notes and the like."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.mapping.agents import Agent
from worker.mapping.fit import truncate
from worker.mapping.transcript import Message
from worker.mapping.transforms import normalise_phone, redact_text

SUMMARY_MAX = 500
_FIRST_LINE_MAX = 160


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def summarise(
    event: Mapping[str, Any],
    agent: Agent | None,
    messages: Sequence[Message],
    duration_seconds: int | None,
) -> str:
    """E.g. `Inbound call, 3m 25s, agent Ann Lee, +4420.... Outcome: ok. Subject: ... (4 msgs)`."""
    kind = _text(event.get("type")).capitalize()
    head = [f"{kind} call" if kind else "Phone call"]
    if duration_seconds is not None:
        head.append(_duration(duration_seconds))
    if agent is not None:
        head.append(f"agent {agent.name or agent.caliq_employee_id or agent.owner_id}")
    elif event.get("owner_id") is not None:
        head.append(f"agent #{event['owner_id']}")
    phone = normalise_phone(_text(event.get("phone_number")))
    if phone:
        head.append(f"number {phone}")
    parts = [", ".join(head)]
    for label, key in (("Outcome", "outcome"), ("Ended", "stopped_reason"), ("Subject", "subject")):
        value = _text(event.get(key))
        if value:
            parts.append(f"{label}: {value}")
    if messages:
        first = messages[0]
        line = truncate(redact_text(_text(f"{first.speaker}: {first.text}")), _FIRST_LINE_MAX)
        count = len(messages)
        parts.append(f"Transcript ({count} message{'s' if count != 1 else ''}) starts: {line}")
    # Redact before any cut: a cut card number would no longer be recognised and masked.
    return truncate(redact_text(". ".join(parts)), SUMMARY_MAX)
