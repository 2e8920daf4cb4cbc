"""JsonHttp over real HTTP: what goes on the wire, and a redirect refused.

JsonHttp prepares its requests with part of requests' preparation and sends them on the session's
adapter (see worker.adapters.http). These tests hold it to what requests itself would send.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from worker.adapters.http import ErrorKind, JsonHttp, RemoteError

IGNORED = {"user-agent", "accept-encoding", "connection"}


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, str]] = (201, {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append({
            "method": self.command, "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()
                        if k.lower() not in IGNORED},
            "body": self.rfile.read(length),
        })
        status, headers = self.server.answer
        body = b'{"InteractionId": 7}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _any

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


HEADERS = {"Content-Type": "application/json", "Accept": "application/json",
           "REST-Framework-Version": "4"}


def _client(server: Recorder, **kw: Any) -> JsonHttp:
    return JsonHttp("oracle", f"{server.url}/crmRestApi/resources/11.13.18.05",
                    timeout=(2, 2), headers=HEADERS, **kw)


def test_a_json_write_goes_out_as_requests_itself_sends_it(server: Recorder) -> None:
    body = {"MediaItemId": "0001KaC1A0AE00A1", "Description": "Billing question ü"}
    response = _client(server, auth=("svc", "s3cret")).request(
        "POST", "interactions/300100/child/childInteractions", json_body=body)
    assert response.json() == {"InteractionId": 7}
    requests.post(f"{server.url}/crmRestApi/resources/11.13.18.05/interactions/300100/child/"
                  "childInteractions", json=body, headers=HEADERS, auth=("svc", "s3cret"),
                  timeout=2)
    ours, theirs = server.seen
    assert ours == theirs
    assert ours["headers"]["authorization"].startswith("Basic ")
    assert json.loads(ours["body"]) == body


def test_a_query_and_a_bearer_token_are_prepared_in_full(server: Recorder) -> None:
    client = JsonHttp("oracle", server.url, timeout=(2, 2),
                      headers={**HEADERS, "Authorization": "Bearer tok"})
    client.request("GET", "interactions", params={
        "finder": "InteractionRowFinderByMediaItemId;BindMediaItemId=a b", "limit": "2"})
    client.request("PATCH", "interactions/5", json_body={"StatusCd": "ORA_SVC_CLOSED"})
    query, patch = server.seen
    assert query["path"] == ("/interactions?finder=InteractionRowFinderByMediaItemId%3B"
                             "BindMediaItemId%3Da+b&limit=2")
    assert query["headers"]["authorization"] == "Bearer tok"
    assert patch["path"] == "/interactions/5"
    assert patch["headers"]["content-length"] == str(len(patch["body"]))


def test_a_redirect_is_a_permanent_error_that_names_where_and_is_not_followed(
        server: Recorder) -> None:
    server.answer = (301, {"Location": f"{server.url}/elsewhere"})
    with pytest.raises(RemoteError) as raised:
        _client(server, auth=("svc", "s3cret")).request(
            "POST", "interactions", json_body={"a": 1})
    error = raised.value
    assert error.kind is ErrorKind.PERMANENT
    assert error.status == 301
    assert f"redirect to {server.url}/elsewhere not followed" in str(error)
    assert "s3cret" not in str(error)
    assert [seen["path"] for seen in server.seen] == ["/crmRestApi/resources/11.13.18.05/"
                                                      "interactions"]


def test_a_clients_requests_share_one_pool_looked_up_once(
        server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests' pool lookup runs once per origin, and again after the adapter is closed."""
    from requests.adapters import HTTPAdapter

    lookups: list[str] = []
    lookup = HTTPAdapter.get_connection_with_tls_context

    def counted(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(request.url)
        return lookup(self, request, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "get_connection_with_tls_context", counted)
    client = _client(server)
    for n in range(3):
        client.request("POST", f"interactions/{n}", json_body={"n": n})
    assert len(lookups) == 1
    adapter = client.session.get_adapter(server.url)
    pool = adapter.get_connection_with_tls_context(
        requests.Request("GET", f"{server.url}/x").prepare(), client.session.verify)
    assert pool.num_connections == 1                   # one keep-alive connection, reused
    adapter.close()                                    # the session's end: pools forgotten
    client.request("POST", "interactions/3", json_body={"n": 3})
    assert len(lookups) == 2 and len(server.seen) == 4


def test_a_request_through_a_proxy_is_looked_up_by_requests(
        server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy is chosen per URL: the pool is not remembered for the origin."""
    client = _client(server)
    client.session.proxies = {"http": server.url}   # the recorder stands in for the proxy
    for n in range(2):
        client.request("POST", f"interactions/{n}", json_body={"n": n})
    adapter = client.session.get_adapter(server.url)
    assert adapter._pools == {}
    assert [seen["path"].startswith("http://") for seen in server.seen] == [True, True]


def test_a_response_is_what_requests_itself_builds(server: Recorder) -> None:
    ours = _client(server).request("POST", "interactions", json_body={"a": 1})
    theirs = requests.post(f"{server.url}/crmRestApi/resources/11.13.18.05/interactions",
                           json={"a": 1}, headers=HEADERS, timeout=2)
    for name in ("status_code", "url", "reason", "encoding", "content"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert dict(ours.headers) == {**dict(theirs.headers), "Date": ours.headers["Date"]}
    assert ours.request.url == ours.url


def test_both_schemes_pool_connections_that_send_head_and_body_together(
        server: Recorder) -> None:
    from worker.adapters.http import OneSendHTTPConnectionPool, OneSendHTTPSConnectionPool

    adapter = _client(server).session.get_adapter(server.url)
    assert isinstance(adapter.poolmanager.connection_from_url(server.url),
                      OneSendHTTPConnectionPool)
    assert isinstance(adapter.poolmanager.connection_from_url("https://crm.example"),
                      OneSendHTTPSConnectionPool)


def test_the_server_reads_a_whole_request_in_its_first_read() -> None:
    """On a real socket: head and body reach the server together, not in two segments."""
    listener = socket.create_server(("127.0.0.1", 0))
    reads: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            reads.append(connection.recv(65536))
            connection.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    body = {"MediaItemId": "0001KaC1A0AE00A1", "Description": "x" * 600}
    client = JsonHttp("oracle", f"http://127.0.0.1:{listener.getsockname()[1]}",
                      timeout=(2, 2), headers=HEADERS)
    assert client.request("POST", "interactions", json_body=body).status_code == 201
    thread.join(timeout=5)
    listener.close()
    head, _, rest = reads[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /interactions HTTP/1.1")
    assert json.loads(rest) == body
