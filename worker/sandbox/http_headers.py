"""Request headers read without the email package, in the simulators' own process.

http.server reads a request's headers with `http.client.parse_headers`, which hands them to
`email.parser`: py-spy put that at about two fifths of a simulator's CPU per request. The
simulators stand in for remote CRMs, yet in the benchmark they share the workers' two cores.
`parse_headers` here builds the same `HTTPMessage` directly when every line is a plain
`Name: value` field, and leaves anything else (a folded line, a line with no field name, a bare
CR, a multipart or message body type) to the standard parser, so that what a request handler
sees never differs. `install` puts it in place of http.client's for this process only: the
simulator server's entry point calls it, nothing in the worker does.
"""

from __future__ import annotations

import http.client
import re
from typing import BinaryIO

_STDLIB_PARSE_HEADERS = http.client.parse_headers
# A field name as email's parser accepts one (RFC 5322 ftext: printable, no space, no colon).
_FIELD = re.compile(r"[!-9;-~]+:")
_LINE_ENDS = ("\r\n", "\n")


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
                  ) -> http.client.HTTPMessage:
    """`http.client.parse_headers`, the same answer for the same bytes, with its limits."""
    lines = http.client._read_headers(fp)  # the standard line and count limits, and errors
    fields = _plain_fields(lines)
    if fields is None:
        return _STDLIB_PARSE_HEADERS(_Replay(lines), _class)
    message = _class()
    for name, value in fields:
        message.set_raw(name, value)
    message.set_payload("")   # what email's parser leaves for an empty body
    return message


def install() -> None:
    """Use `parse_headers` for every header block this process reads (http.server looks
    `http.client.parse_headers` up at each request)."""
    http.client.parse_headers = parse_headers  # type: ignore[assignment]


def _plain_fields(lines: list[bytes]) -> list[tuple[str, str]] | None:
    fields = []
    for raw in lines[:-1]:   # the last line is the blank one that ends the block, or EOF's b""
        line = raw.decode("iso-8859-1")
        for end in _LINE_ENDS:
            if line.endswith(end):
                line = line[: -len(end)]
                break
        # email splits lines at a lone CR too, and treats a leading space or tab as a fold.
        if "\r" in line or not _FIELD.match(line):
            return None
        name, value = line.split(":", 1)
        value = value.lstrip(" \t")
        if name.lower() == "content-type" and _mime_container(value):
            return None   # email parses such a body's (absent) parts, and notes defects
        fields.append((name, value))
    return fields


def _mime_container(content_type: str) -> bool:
    lowered = content_type.lower()
    return "multipart" in lowered or "message" in lowered


class _Replay:
    """The lines already read, offered again to the standard parser (it reads by readline)."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = iter(lines)

    def readline(self, _limit: int = -1) -> bytes:
        return next(self._lines, b"")
