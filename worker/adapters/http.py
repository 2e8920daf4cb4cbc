"""What every CRM request shares: one pooled session, explicit timeouts, error classes, timing.

A remote error is classified once, here, into the three classes the service acts on:
transient (try again later), permanent (the request itself is wrong; do not repeat it) and auth
(the credentials are wrong; park until an operator fixes them).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from worker import metrics
from worker.adapters.repository import RequestRecord

TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
AUTH_STATUSES = {401, 403}


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    AUTH = "auth"


class RemoteError(Exception):
    """A CRM said no, or did not answer. The message never holds a secret or a request body."""

    def __init__(
        self, crm: str, kind: ErrorKind, message: str, *, status: int | None = None,
        request_id: str | None = None, retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        self.crm = crm
        self.kind = kind
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied   # the request may have taken effect (a lost answer)
        super().__init__(message)


def classify_status(status: int) -> ErrorKind:
    if status in AUTH_STATUSES:
        return ErrorKind.AUTH
    if status in TRANSIENT_STATUSES or status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare from these CRMs; fall back to our own back-off


def make_session(root: str, pool_size: int = 32) -> requests.Session:
    """One keep-alive pool per client. Retries are ours (by error class), never urllib3's."""
    session = requests.Session()
    # requests reads proxy and CA-bundle variables from os.environ again on every request, a
    # quarter of a request's CPU when profiled. They are read once here instead; a change to
    # them takes a restart, like every other setting.
    session.proxies.update(requests.utils.get_environ_proxies(root))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.verify = bundle or True
    session.trust_env = False
    adapter = PoolPerOriginAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class OneSendHTTPConnection(HTTPConnection):
    """urllib3 writes a request's head, then its body, in two sends: two TCP segments (two TLS
    records) and, at the server, often two wake-ups for one request. A body given as bytes, as
    every JSON write here is, now leaves with its head in one send. Anything else (a stream, a
    chunked body) is sent as urllib3 sends it."""

    _hold_head = False           # set while a request whose body is bytes is being written
    _head: bytes | None = None   # that request's head, waiting for its body

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kwargs: Any) -> None:
        if not isinstance(body, bytes) or kwargs.get("chunked"):
            super().request(method, url, body=body, headers=headers, **kwargs)
            return
        self._hold_head = True
        try:
            super().request(method, url, body=body, headers=headers, **kwargs)
            if self._head is not None:   # urllib3 sends no empty body: the head goes alone
                super().send(self._head)
        finally:
            self._hold_head, self._head = False, None

    def send(self, data: Any) -> None:
        if self._hold_head and isinstance(data, bytes):
            if self._head is None:
                self._head = data
                return
            data, self._head, self._hold_head = self._head + data, None, False
        super().send(data)


class OneSendHTTPSConnection(OneSendHTTPConnection, HTTPSConnection):
    pass


class OneSendHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = OneSendHTTPConnection


class OneSendHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = OneSendHTTPSConnection


class PoolPerOriginAdapter(HTTPAdapter):
    """requests' HTTPAdapter, with a connection pool looked up once per origin (scheme, host and
    port) and TLS settings. requests parses the URL and rebuilds the pool's key on every request
    (22 µs of CPU against 1 µs here, on the benchmark's machine), though a client talks to one
    host.

    With proxies, requests' own lookup runs each time; after `close`, once again. It
    remembers as many origins as the pool manager keeps pools (`pool_connections`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pools: dict[tuple[str, str, str], Any] = {}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # A proxy's manager (requests' proxy_manager_for) keeps urllib3's own connections.
        self.poolmanager.pool_classes_by_scheme = {
            "http": OneSendHTTPConnectionPool, "https": OneSendHTTPSConnectionPool}

    def close(self) -> None:
        self._pools.clear()
        super().close()

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        """The path, as requests gives it without a proxy, without parsing the URL twice
        more to find out that there is none."""
        if proxies:
            return str(super().request_url(request, proxies))
        return str(request.path_url)

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """requests' Response, without reading the answer's cookies into a jar: JsonHttp sends
        no cookie (it bypasses Session.send), so none would ever be used."""
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode() if isinstance(req.url, bytes) else str(req.url)
        response.request = req
        response.connection = self
        return response

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> Any:
        if proxies or not request.url:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = ("/".join(request.url.split("/", 3)[:3]), str(verify), str(cert))
        pool = self._pools.get(key)
        if pool is None:
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if len(self._pools) >= self._pool_connections:   # as many as the manager keeps
                self._pools.clear()
            self._pools[key] = pool
        return pool


# A path of these characters is sent exactly as written: requests' URL preparation (parsing,
# IDNA, re-quoting) would give it back unchanged, so it is skipped for it.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~/-]*")

Recorder = Callable[[RequestRecord], None]
# Blocks until the CRM's shared rate limit lets one more request go (worker.adapters.ratelimit).
Limiter = Callable[[], object]


class JsonHttp:
    """Sends JSON, times it, reports each request to `recorder`, turns failures into RemoteError."""

    def __init__(
        self, crm: str, root: str, *, timeout: tuple[float, float],
        headers: dict[str, str] | None = None, auth: Any = None,
        session: requests.Session | None = None, limiter: Limiter | None = None,
        pool_size: int = 32,
    ) -> None:
        self.crm = crm
        self.limiter = limiter
        self.root = root.rstrip("/")
        self.timeout = timeout
        self.session = session or make_session(self.root, pool_size)
        self.session.headers.update(headers or {})
        # What every request of this client carries, worked out once: the session's headers and,
        # for a (username, password) pair, the Basic header (requests encodes it per request).
        # Any other auth object is applied per request by requests' own preparation.
        self._headers = CaseInsensitiveDict(self.session.headers)
        self._auth = auth
        if isinstance(auth, tuple):
            self._headers["Authorization"] = _basic_auth_header(*auth)
            self._auth = None
        self._plain_root = _prepare_url(f"{self.root}/x") == f"{self.root}/x"

    def request(
        self, method: str, path: str, *, recorder: Recorder | None = None,
        json_body: Any = None, params: dict[str, str] | None = None,
        describe_error: Callable[[requests.Response], str] | None = None,
    ) -> requests.Response:
        started = time.perf_counter()
        try:
            prepared = self._prepare(method, path, json_body, params)
            if self.limiter is not None:
                # The last thing before the send: a stall between the turn and the send would
                # put this request on top of the next turns, so nothing else runs in between.
                self._wait_for_turn(self.limiter, method, path)
                started = time.perf_counter()
            # The session's adapter, with its pool, proxies and CA bundle, without Session.send:
            # its cookie jar, hooks and redirect handling are a fifth of a request's client CPU
            # and none of them applies to a JSON API (a redirect is refused below).
            response = self.session.get_adapter(prepared.url).send(
                prepared, stream=False, timeout=self.timeout, verify=self.session.verify,
                cert=self.session.cert, proxies=self.session.proxies,
            )
            response.content  # noqa: B018 - read the body, so the connection goes back to the pool
        except requests.RequestException as exc:
            elapsed = (time.perf_counter() - started) * 1000
            message = f"{method} {path}: no answer ({type(exc).__name__})"
            metrics.observe_request(self.crm, method, path, None, elapsed / 1000)
            if recorder:
                recorder(RequestRecord(self.crm, method, path, None, elapsed, message))
            # A write that timed out or lost its connection may have been applied.
            sent = not isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError)
            raise RemoteError(
                self.crm, ErrorKind.TRANSIENT, message, maybe_applied=sent and method != "GET"
            ) from None
        elapsed = (time.perf_counter() - started) * 1000
        metrics.observe_request(self.crm, method, path, response.status_code, elapsed / 1000)
        error = None
        if response.status_code >= 400:
            detail = describe_error(response) if describe_error else response.text[:500]
            error = f"{method} {path}: HTTP {response.status_code}: {detail}"
        elif response.status_code >= 300:
            # A CRM's REST API does not redirect a write; one that does points at a wrong base
            # URL (http for https, a login page), and re-sending there is not ours to decide.
            where = response.headers.get("Location", "no Location")
            error = (f"{method} {path}: HTTP {response.status_code}: redirect to {where} "
                     "not followed (check the base URL)")
        if recorder:
            recorder(RequestRecord(
                self.crm, method, path, response.status_code, elapsed, error
            ))
        if error is not None:
            kind = classify_status(response.status_code)
            raise RemoteError(
                self.crm, kind, error, status=response.status_code,
                request_id=_request_id(response),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                maybe_applied=kind is ErrorKind.TRANSIENT and method != "GET",
            )
        return response

    def _prepare(self, method: str, path: str, json_body: Any,
                 params: dict[str, str] | None) -> requests.PreparedRequest:
        """requests' own preparation, minus the steps that cannot change these requests."""
        url = f"{self.root}/{path}"
        if params or self._auth is not None or not (
                self._plain_root and _PLAIN_PATH.fullmatch(path)):
            # A query, a custom auth or an unusual path: requests prepares all of it.
            return requests.Request(method, url, headers=self._headers, auth=self._auth,
                                    json=json_body, params=params).prepare()
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.url = url
        prepared.headers = self._headers.copy()
        prepared.prepare_body(None, None, json_body)
        return prepared

    def _wait_for_turn(self, limiter: Limiter, method: str, path: str) -> None:
        try:
            limiter()
        except Exception as exc:  # the limiter's store is down, or its queue too long
            # Nothing was sent: a transient error that backs off, never a request over the limit.
            raise RemoteError(
                self.crm, ErrorKind.TRANSIENT,
                f"{method} {path}: rate limit unavailable ({type(exc).__name__})",
                retry_after=1.0,
            ) from None


def _prepare_url(url: str) -> str | None:
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


def _basic_auth_header(username: str, password: str) -> str:
    """The Authorization header requests' HTTPBasicAuth would add."""
    prepared = requests.PreparedRequest()
    prepared.headers = CaseInsensitiveDict()
    HTTPBasicAuth(username, password)(prepared)
    return str(prepared.headers["Authorization"])


def _request_id(response: requests.Response) -> str | None:
    for header in ("X-ORACLE-DMS-ECID", "X-Request-Id", "X-Correlation-Id"):
        if header in response.headers:
            return response.headers[header]
    return None
