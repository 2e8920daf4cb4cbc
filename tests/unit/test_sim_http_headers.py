"""The simulators' header parser gives what http.client's gives, for any header block."""

from __future__ import annotations

import http.client
import io
import random
import time

import pytest

from worker.sandbox import http_headers

STDLIB = http_headers._STDLIB_PARSE_HEADERS


def parsed(parse: object, raw: bytes) -> tuple[object, ...]:
    fp = io.BufferedReader(io.BytesIO(raw))
    message = parse(fp)  # type: ignore[operator]
    rest = fp.read()   # the body must be left where it was, unread
    payload = message.get_payload()
    if isinstance(payload, list):   # message/*: the parts, compared by their headers
        payload = [part.items() for part in payload]
    return (message.items(), payload, [type(d) for d in message.defects],
            message.get_unixfrom(), message.get_content_type(), rest)


CASES = [
    b"",
    b"\r\n",
    b"\n",
    b"Host: a\r\nContent-Length: 12\r\n\r\n{\"x\": 1}",
    b"Host: a\nAccept: */*\n\n",
    b"Host: a\r\n",                              # the stream ends before the blank line
    b"A:1\r\nA:  2 \r\nB:\t\tx\r\n\r\n",         # repeats, no space, trailing space kept
    b"Empty:\r\n\r\n",
    b"Folded: one\r\n two\r\n\r\n",              # obsolete line folding
    b" Leading: fold\r\nA: 1\r\n\r\n",           # first line a continuation
    b"From sender\r\nA: 1\r\n\r\n",              # a Unix From line
    b"No colon here\r\nA: 1\r\n\r\n",
    b": no name\r\n\r\n",
    b"A: lone\rcr\r\n\r\n",                      # email splits lines at a bare CR
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n",
    b"content-type: message/rfc822\r\n\r\n",
    b"Content-Type: application/json\r\nX-Caf\xe9: \xe9t\xe9\r\n\r\n",
    b"Authorization: Basic c2FuZGJveDpzYW5kYm94LXBhc3N3b3Jk\r\n\r\nbody",
]


@pytest.mark.parametrize("raw", CASES)
def test_same_message_as_http_client(raw: bytes) -> None:
    assert parsed(http_headers.parse_headers, raw) == parsed(STDLIB, raw)


def test_same_message_for_generated_blocks() -> None:
    pieces = ["A", "Content-Type", "x-y", "From", " ", "\t", ":", ": ", "v", "multipart/x",
              "\r", "\xe9", "From "]
    rng = random.Random(20261202)
    plain = 0
    for _ in range(3000):
        lines = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
                 for _ in range(rng.randint(0, 4))]
        end = rng.choice(["\r\n", "\n"])
        raw = "".join(line + end for line in lines).encode("iso-8859-1") + end.encode()
        assert parsed(http_headers.parse_headers, raw) == parsed(STDLIB, raw), raw
        lines = http.client._read_headers(io.BufferedReader(io.BytesIO(raw)))
        plain += http_headers._plain_fields(lines) is not None
    assert plain > 300   # the direct path is compared too, not only the fallback


def test_plain_fields_do_not_reach_the_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the standard parser was used")

    monkeypatch.setattr(http_headers, "_STDLIB_PARSE_HEADERS", refuse)
    message = http_headers.parse_headers(io.BufferedReader(io.BytesIO(
        b"Host: 127.0.0.1\r\nContent-Length: 2\r\nREST-Framework-Version: 4\r\n\r\n{}")))
    assert message["rest-framework-version"] == "4"
    assert message.get_all("Host") == ["127.0.0.1"]
    with pytest.raises(AssertionError, match="standard parser"):
        http_headers.parse_headers(io.BufferedReader(io.BytesIO(b"A: b\r\n c\r\n\r\n")))


def test_the_standard_limits_still_hold() -> None:
    too_long = b"A: " + b"x" * 70_000 + b"\r\n\r\n"
    with pytest.raises(http.client.LineTooLong):
        http_headers.parse_headers(io.BufferedReader(io.BytesIO(too_long)))
    too_many = b"".join(b"H%d: v\r\n" % n for n in range(101)) + b"\r\n"
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        http_headers.parse_headers(io.BufferedReader(io.BytesIO(too_many)))


def test_install_replaces_http_clients_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.client, "parse_headers", STDLIB)
    http_headers.install()
    assert http.client.parse_headers is http_headers.parse_headers


def test_date_header_formatted_once_a_second_and_correct() -> None:
    from email.utils import formatdate

    from worker.sandbox.base import SimHandler

    handler = object.__new__(SimHandler)   # date_time_string needs no request
    for _ in range(5):   # a second may turn between the calls: then try again
        second = int(time.time())
        first, again = handler.date_time_string(), handler.date_time_string()
        if int(time.time()) == second:
            break
    assert first is again   # the same string, not formatted anew
    assert first == formatdate(second, usegmt=True)
    assert handler.date_time_string(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
