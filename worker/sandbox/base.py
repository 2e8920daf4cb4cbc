"""HTTP plumbing shared by the simulators: body reading, latency, faults, request log, replies.

Each simulator is a ``SimState`` subclass (records + ``handle``); one ``SimHandler`` class serves
any of them, so faults and the admin endpoints behave identically on both CRMs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.sandbox.faults import FaultPlan, FaultRule

ADMIN_PREFIX = "/_sim/"
# Ids unique per simulator process (request ids, Oracle's login ids), and cheaper than a uuid4
# each (a system call for its randomness). count() is safe to share between the server's
# threads; a generator is not.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNT = itertools.count(1)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return cls(status, json.dumps(payload).encode(), content_type, dict(headers or {}))

    @classmethod
    def text(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, message.encode(), "text/plain; charset=utf-8", dict(headers or {}))


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: Message
    body: bytes

    def params(self) -> dict[str, str]:
        """First value of each query parameter (';' is not a separator, so finders survive)."""
        return {k: v[0] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    def json_body(self) -> Any:
        """Parsed JSON body; raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8")) if self.body else None


def unique_id() -> str:
    """32 hex digits, unique in this simulator process."""
    return f"{_ID_PREFIX}{next(_ID_COUNT):016x}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SimState:
    """Records, request log, fault plan and latency of one simulator."""

    name = "simulator"

    def __init__(self, latency_ms: float = 0) -> None:
        # Re-entrant: handle() holds it while store helpers take it again.
        self.lock = threading.RLock()
        self.faults = FaultPlan()
        self.latency_ms = float(latency_ms)
        self._log: list[dict[str, Any]] = []

    # --- overridden by each simulator -------------------------------------------------
    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def clear_records(self) -> None:
        raise NotImplementedError

    def fault_reply(self, request: Request, status: int, message: str) -> Reply:
        """Body for an injected failure; simulators override to speak their CRM's dialect."""
        return Reply.json(status, {"status": status, "message": message})

    def configure(self, options: dict[str, Any]) -> None:
        if "latency_ms" in options:
            self.latency_ms = float(options.pop("latency_ms"))
        if options:
            raise ValueError(f"unknown config keys: {sorted(options)}")

    def config(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms}

    # --- shared -----------------------------------------------------------------------
    def log_request(self, request: Request, status: int | None, fault: str | None) -> None:
        entry = {
            "method": request.method,
            "path": request.path,
            "status": status,
            "query": request.query,
            "at": utc_now(),
            "fault": fault,
        }
        with self.lock:
            self._log.append(entry)

    def request_log(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self._log]

    def reset(self) -> None:
        with self.lock:
            self.clear_records()
            self._log.clear()
            self.faults.clear()


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128   # socketserver's 5 drops connects from a 64-thread worker

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        self.state = state
        super().__init__(address, SimHandler)


class SimHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 + Content-Length everywhere: the worker's pooled requests.Session reuses sockets.
    protocol_version = "HTTP/1.1"
    # Without it every small reply waits on Nagle's algorithm (~25 ms), skewing benchmarks.
    disable_nagle_algorithm = True
    # A buffered wfile: a reply's head and body leave in one send when http.server flushes it
    # after each request (unbuffered, they were two), so the client reads one segment, not two.
    wbufsize = 64 * 1024
    server: SimServer
    _date: tuple[int, str] = (-1, "")   # (epoch second, its Date header); replaced whole

    def handle(self) -> None:
        # The client hung up (a killed worker, a timeout): there is nothing to answer.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log at /_sim/requests replaces stderr noise

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once a second rather than for every reply."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        cached = SimHandler._date
        if cached[0] != second:
            cached = SimHandler._date = (second, super().date_time_string(second))
        return cached[1]

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        # Imported here: control imports base, and admin routing is only needed at request time.
        from worker.sandbox.control import admin_reply

        state = self.server.state
        parts = urlsplit(self.path)
        request = Request(self.command, parts.path, parts.query, self.headers, self._read_body())
        if request.path.startswith(ADMIN_PREFIX):
            self._send(admin_reply(state, request))
            return
        if state.latency_ms > 0:
            time.sleep(state.latency_ms / 1000)
        rule = state.faults.take(request.method, request.path)
        if rule is None:
            reply = state.handle(request)
        elif rule.action == "drop":
            state.log_request(request, None, rule.action)
            self._drop()
            return
        elif rule.action == "drop_after_apply":
            reply = state.handle(request)
            state.log_request(request, reply.status, rule.action)
            self._drop()
            return
        else:
            reply = self._fault(state, request, rule)
        state.log_request(request, reply.status, rule.action if rule else None)
        self._send(reply)

    def _fault(self, state: SimState, request: Request, rule: FaultRule) -> Reply:
        if rule.action == "timeout":
            time.sleep(rule.timeout_delay)
        message = f"Sandbox fault injected: {rule.action}"
        reply = state.fault_reply(request, rule.status, message)
        if rule.status in (429, 503):
            reply.headers["Retry-After"] = rule.retry_after_header
        return reply

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            # Real CRMs stamp a request id; callsync stores it with a failure for support cases.
            self.send_header("X-Request-Id", unique_id())
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. it timed out during a 'timeout' fault).
            self.close_connection = True

    def _drop(self) -> None:
        """Close the socket without a single response byte: models a lost answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
