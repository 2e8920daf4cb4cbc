"""The benchmark's judgements, as pure functions over what the simulators and the database hold:
is the result complete with no duplicate, how many requests did each call cost against its
minimum, how fast were the CRMs called, and how long did each event take to be applied.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.domain.events import Status
from worker.domain.plan import LEGS

LEGS_NEEDED = {int(Status.NEW): ("oracle_interaction",),
               int(Status.IN_PROCESS): ("oracle_interaction",),
               int(Status.STOPPED): LEGS}


def completeness_problems(
    oracle: Mapping[str, Any], caliq: Mapping[str, Any], threads: Mapping[str, str],
    messages: Mapping[str, int],
) -> list[str]:
    """Everything wrong with the CRMs' records for these calls (call id -> thread key), as
    sentences; empty when each call has exactly one interaction under its thread's top-level,
    ended, one phoneCall with its whole transcript, and one Caliq interaction."""
    problems: list[str] = []
    interactions = oracle.get("interactions", [])
    by_media = _exactly_once("Oracle interaction", "MediaItemId", interactions, threads, problems)
    calls = _exactly_once("phoneCall", "ExternalSystemCallId", oracle.get("phoneCalls", []),
                          threads, problems)
    _exactly_once("Caliq interaction", "UniqueID", caliq.get("interactions", []), threads,
                  problems)
    for call_id, record in by_media.items():
        top = by_media.get(threads[call_id])
        if top is not None and record["ParentInteractionId"] != top["InteractionId"]:
            problems.append(f"{call_id}: not under its thread's top-level interaction")
        if record.get("EndTime") is None:
            problems.append(f"{call_id}: interaction not ended")
    for call_id, record in calls.items():
        interaction = by_media.get(call_id)
        if interaction is not None and record["InteractionId"] != interaction["InteractionId"]:
            problems.append(f"{call_id}: phoneCall not on the call's interaction")
        got = len(record.get("TranscriptMessage") or [])
        if got != messages.get(call_id, 0):
            problems.append(f"{call_id}: transcript has {got} of {messages.get(call_id)} messages")
    return problems


def _exactly_once(
    what: str, key: str, records: Iterable[Mapping[str, Any]], threads: Mapping[str, str],
    problems: list[str],
) -> dict[str, Mapping[str, Any]]:
    seen = Counter(str(r.get(key)) for r in records)
    for value, count in sorted(seen.items()):
        if value not in threads:
            problems.append(f"{what} {key}={value}: not a call of this run")
        elif count > 1:
            problems.append(f"{what} {key}={value}: {count} records (duplicate)")
    missing = [c for c in threads if c not in seen]
    if missing:
        problems.append(f"{len(missing)} calls without a {what}, e.g. {', '.join(missing[:3])}")
    return {str(r.get(key)): r for r in records if str(r.get(key)) in threads}


def request_counts(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """What the simulators saw: requests per CRM and method, GETs, and answers that were not 2xx."""
    by_crm = {crm: len(log) for crm, log in logs.items()}
    by_method = Counter(f"{crm} {e['method']}" for crm, log in logs.items() for e in log)
    return {
        "total": sum(by_crm.values()),
        "by_crm": by_crm,
        "by_method": dict(sorted(by_method.items())),
        "gets": sum(1 for log in logs.values() for e in log if e["method"] == "GET"),
        "errors": sum(1 for log in logs.values() for e in log
                      if e.get("status") is None or not 200 <= int(e["status"]) < 300),
    }


def minimum_requests(rows: Iterable[tuple[str, str, str]], calls: int) -> dict[str, int]:
    """The fewest requests the run's arrival order allowed, from callsync's own request log
    (interaction id, legs, method): 4 per call whose STOPPED came after its interaction was
    created, 3 when the interaction was created already ended, +1 per thread whose consult
    came first (a placeholder top-level, later PATCHed with the root's data)."""
    folded = placeholders = 0
    for _call, legs, method in rows:
        names = set(legs.split(","))
        if names == {"oracle_interaction", "oracle_end"}:
            folded += 1
        if "oracle_interaction" in names and method == "PATCH":
            placeholders += 1
    return {"minimum": 4 * calls - folded + placeholders, "stopped_first_calls": folded,
            "separate_calls": calls - folded, "placeholder_threads": placeholders}


def parse_at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def rate_stats(log: Sequence[Mapping[str, Any]], window: float = 1.0) -> dict[str, float]:
    """Requests per second a CRM received: the average over the run and the busiest window."""
    times = sorted(parse_at(e["at"]) for e in log)
    if not times:
        return {"requests": 0, "average_per_second": 0.0, "max_in_1s": 0}
    busiest = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        busiest = max(busiest, end - start + 1)
    span = times[-1] - times[0]
    return {"requests": len(times),
            "average_per_second": round((len(times) - 1) / span, 2) if span > 0 else 0.0,
            "max_in_1s": busiest}


def epoch(moment: datetime) -> float:
    """The database's naive-UTC timestamps as epoch seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


def applied_latencies(
    published: Mapping[tuple[str, int], float],
    received: Mapping[tuple[str, int], datetime],
    legs_done: Mapping[tuple[str, str], datetime],
) -> list[float]:
    """Seconds from publishing each event to its being applied.

    Applied: the event is in the journal and every leg it requires is done (NEW, IN_PROCESS:
    the call's interaction; STOPPED: all four records), by the database's commit-time stamps.
    An event that adds nothing (e.g. NEW after STOPPED) is applied when it is journaled.
    """
    out = []
    for (call_id, status), sent in published.items():
        stamps = [received[(call_id, status)]]
        stamps += [legs_done[(call_id, leg)] for leg in LEGS_NEEDED[status]]
        out.append(max(epoch(s) for s in stamps) - sent)
    return out


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 is a latency that happened)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]
