"""Realistic Genesys phone-call events, for the demo, the benchmark and the tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.domain.events import Status

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
AGENTS = (101, 102, 103)
LINES = (
    "Agent: Thank you for calling, this is {agent}. How can I help?",
    "Customer: Hi, I was charged twice for my last order.",
    "Agent: I am sorry to hear that. Can you confirm the card you paid with?",
    "Customer: Sure, it is 4111 1111 1111 1111.",
    "Agent: Thanks. I can see both charges; I am refunding the duplicate now.",
    "Customer: Great, how long will it take?",
    "Agent: Three to five working days. Anything else?",
    "Customer: No, that is all. Thank you!",
)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event(interaction_id: str = "call-1", status: Status = Status.NEW, **overrides: Any) -> dict:
    """One event of a call; STOPPED carries the end, the transcript and the recording."""
    start = overrides.pop("start", T0)
    owner = overrides.get("owner_id", AGENTS[0])
    base: dict[str, Any] = {
        "interaction_id": interaction_id,
        "customer_id": "cust-1",
        "status": int(status),
        "entity_type": 3,
        "type": "Inbound",
        "media_type": "voice",
        "creator_app_id": 77,
        "start_date": iso(start),
        "owner_id": owner,
        "phone_number": "+1 (555) 010-2030",
        "subject": f"Billing question ({interaction_id})",
        "udata": {
            "CaliqCustomerID": 4242,
            "CaliqEmployeeID": f"E{owner}",
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "OracleAccountPartyId": 300100000000777,
        },
    }
    if status is Status.STOPPED:
        base.update(
            end_date=iso(start + timedelta(minutes=3)),
            duration=180,
            stopped_reason="Normal",
            text="\n".join(line.format(agent=f"agent {owner}") for line in LINES),
            binary_content=f"https://recordings.example.test/{interaction_id}.wav",
            binary_content_mime="audio/wav",
            binary_content_size=2048,
        )
    base.update(overrides)
    return base


def call_events(interaction_id: str, **overrides: Any) -> list[dict]:
    """NEW, IN_PROCESS, STOPPED of one call, in order."""
    return [event(interaction_id, s, **overrides)
            for s in (Status.NEW, Status.IN_PROCESS, Status.STOPPED)]


def thread_events(root: str, consults: int = 2, **overrides: Any) -> list[dict]:
    """A root call and `consults` consult calls of one thread: every event of every call."""
    events = call_events(root, thread_id=root, **overrides)
    for n in range(1, consults + 1):
        events += call_events(
            f"{root}-c{n}", thread_id=root, parent_id=root, start=T0 + timedelta(minutes=n),
            owner_id=AGENTS[n % len(AGENTS)], **overrides,
        )
    return events


def stream(prefix: str, threads: int, *, consults: int = 2, seed: int = 7,
           duplicate: bool = True, shuffle: bool = True) -> list[dict]:
    """Many threads' events, shuffled and (by default) each sent twice: the real world."""
    events = []
    for n in range(threads):
        events += thread_events(f"{prefix}-{n:04d}", consults=n % (consults + 1))
    if duplicate:
        events = events + [dict(e) for e in events]
    if shuffle:
        random.Random(seed).shuffle(events)
    return events
