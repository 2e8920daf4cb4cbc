"""Split a Genesys call `text` into ordered `Speaker: words` messages."""

from __future__ import annotations

import re
from dataclasses import dataclass

UNKNOWN_SPEAKER = "Unknown"

# A speaker label: starts with a letter, at most 40 characters of name-like text. Kept narrow so
# "Note: call back at 10:15" style lines still split, but "10:15 ..." and URLs ("https://...")
# do not start a message.
_SPEAKER_LINE = re.compile(r"^\s*([A-Za-z][\w .'()-]{0,39}?)\s*:(?!//)\s?(.*)$")


@dataclass(frozen=True)
class Message:
    speaker: str
    text: str


def parse_transcript(text: str | None) -> list[Message]:
    """Each `Speaker: words` line is a message; an unprefixed line continues the previous one.

    Blank lines are skipped, CRLF is tolerated, and text before any speaker is `Unknown`'s.
    """
    if not text:
        return []
    speakers: list[str] = []
    bodies: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        match = _SPEAKER_LINE.match(line)
        if match:
            speakers.append(match.group(1).strip())
            bodies.append([match.group(2).strip()] if match.group(2).strip() else [])
        elif bodies:
            bodies[-1].append(line.strip())
        else:
            speakers.append(UNKNOWN_SPEAKER)
            bodies.append([line.strip()])
    return [
        Message(speaker, "\n".join(body))
        for speaker, body in zip(speakers, bodies, strict=True)
        if body  # a bare "Agent:" with nothing said is not a message
    ]
