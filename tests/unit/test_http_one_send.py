"""OneSendHTTPConnection: a JSON request's head and body leave in one send.

The socket is the seam: a recording stand-in shows each send the connection makes.
"""

from __future__ import annotations

import io

import pytest

from worker.adapters.http import OneSendHTTPConnection, OneSendHTTPSConnection


class RecordingSocket:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.fail = fail

    def settimeout(self, _: object) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("peer gone")
        self.sent.append(bytes(data))


def _connection(sock: RecordingSocket,
                kind: type[OneSendHTTPConnection] = OneSendHTTPConnection
                ) -> OneSendHTTPConnection:
    connection = kind("crm.example")
    connection.sock = sock  # type: ignore[assignment]
    return connection


def test_a_json_body_leaves_with_its_head_in_one_send() -> None:
    sock = RecordingSocket()
    body = b'{"MediaItemId": "0001"}'
    _connection(sock).request("POST", "/interactions", body=body,
                              headers={"Content-Type": "application/json"})
    [sent] = sock.sent
    head, _, rest = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /interactions HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert rest == body


def test_an_empty_body_sends_the_head_alone_and_nothing_is_kept_for_the_next() -> None:
    sock = RecordingSocket()
    connection = _connection(sock)
    connection.request("POST", "/a", body=b"")
    assert connection._head is None and not connection._hold_head
    _connection(sock).request("PATCH", "/b", body=b"{}")
    first, second = sock.sent
    assert first.startswith(b"POST /a ") and b"Content-Length: 0\r\n" in first
    assert first.endswith(b"\r\n\r\n")
    assert second.startswith(b"PATCH /b ") and second.endswith(b"\r\n\r\n{}")


def test_no_body_or_a_stream_is_sent_as_urllib3_sends_it() -> None:
    sock = RecordingSocket()
    _connection(sock).request("GET", "/interactions")
    _connection(sock).request("POST", "/upload", body=io.BytesIO(b"abc"),
                       headers={"Content-Length": "3"})
    get, head, body = sock.sent
    assert get.startswith(b"GET /interactions ") and get.endswith(b"\r\n\r\n")
    assert head.startswith(b"POST /upload ") and body == b"abc"


def test_a_failed_send_holds_nothing_back() -> None:
    sock = RecordingSocket(fail=True)
    connection = _connection(sock)
    with pytest.raises(ConnectionResetError):
        connection.request("POST", "/a", body=b"{}")
    assert connection._head is None and not connection._hold_head
    sock.fail = False
    _connection(sock).request("POST", "/b", body=b"[]")   # urllib3 drops a failed connection
    [sent] = sock.sent
    assert sent.startswith(b"POST /b ") and sent.endswith(b"[]")


def test_the_https_connection_sends_the_same_way() -> None:
    assert issubclass(OneSendHTTPSConnection, OneSendHTTPConnection)
    sock = RecordingSocket()
    _connection(sock, OneSendHTTPSConnection).request("POST", "/x", body=b"{}")
    assert len(sock.sent) == 1
