"""The providers' HTTP client: one pooled urllib3 PoolManager per process, no retries.

The send pipeline owns retries and idempotency, so this layer never retries, never
follows a redirect and keeps no cookies. What goes wrong is told apart by whether the
request may have reached the provider: ConnectFailed (it did not), AnswerTimeout and
ConnectionLost (it may have). `requests` cost twice the CPU of urllib3 per call, on the
hot path of every send.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import os
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from django.conf import settings
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import make_headers

# Without `Accept-Encoding`, urllib3 sends none; the providers may compress their answers
# (urllib3 decodes them), as they did for `requests`.
_ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]


class TransportError(Exception):
    """An HTTP call that got no answer."""


class ConnectFailed(TransportError):
    """No connection was made (refused, name not resolved, connect timeout): the request
    never left, so it is safe to send again."""

    def __init__(self, message: str, *, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class AnswerTimeout(TransportError):
    """The request was written and no answer came within the read timeout."""


class ConnectionLost(TransportError):
    """The connection broke after the request went out (or the answer was unreadable)."""


class InvalidUrl(TransportError):
    """The URL cannot be called (no scheme, no host): nothing was sent."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A provider's answer, read in full. `headers` are case-insensitive."""

    status_code: int
    reason: str
    headers: urllib3.HTTPHeaderDict
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers.get("Content-Type", "")), "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return jsonlib.loads(self.content)


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value.strip("\"'"):
            try:
                return codecs.lookup(value.strip("\"'")).name
            except LookupError:
                break
    return "utf-8"


class _ProcessClient:
    """The pools of one process. A forked child must not write to its parent's sockets:
    it makes its own client on first use (see http_client)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # The CA bundle `requests` used (certifi), unless the environment names another.
        bundle = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or certifi.where()
        )
        self.pool_options = {
            # Idle connections kept per provider host. The process's threads share
            # them (a web process's WEB_SYNC_THREADS may send at once); beyond this a
            # connection is made for the call and closed after it.
            "maxsize": 16,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": bundle,
            "retries": False,
        }
        self.direct = urllib3.PoolManager(32, **self.pool_options)
        # Proxies from the environment (HTTPS_PROXY, NO_PROXY, ...), read once.
        self.proxies = urllib.request.getproxies_environment()
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}

    def manager_for(self, url: str) -> urllib3.PoolManager:
        if not self.proxies:
            return self.direct
        parts = urlsplit(url)
        proxy = self.proxies.get(parts.scheme) or self.proxies.get("all")
        if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", self.proxies):
            return self.direct
        with self._lock:
            manager = self._proxy_managers.get(proxy)
            if manager is None:
                manager = urllib3.ProxyManager(proxy, 32, **self.pool_options)
                self._proxy_managers[proxy] = manager
        return manager

    def timeout(self, connect: float, read: float) -> urllib3.Timeout:
        key = (connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = urllib3.Timeout(connect=connect, read=read)
        return timeout


_client: _ProcessClient | None = None
_client_lock = threading.Lock()


def http_client() -> _ProcessClient:
    """This process's client, shared by its threads (urllib3's pools are thread-safe)."""
    global _client
    client = _client
    if client is None or client.pid != os.getpid():
        with _client_lock:
            client = _client
            if client is None or client.pid != os.getpid():
                # A parent's pools are dropped, not closed: closing would only close this
                # process's copies of the descriptors, and the parent still uses them.
                client = _client = _ProcessClient()
    return client


def _forget_after_fork() -> None:
    global _client, _client_lock
    _client = None
    _client_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def http_request(
    method: str,
    url: str,
    *,
    params: dict | None = None,
    data: dict | bytes | str | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: tuple[float, float] | None = None,
) -> HttpResponse:
    """One request, no retries, no redirects followed. `data` is a form (a dict, sent
    urlencoded) or a ready body; `json` is sent as JSON; `auth` is HTTP Basic;
    `timeout` is (connect, read) seconds, else the NOTIFICATIONS_HTTP_* settings."""
    client = http_client()
    if params:
        url += ("&" if urlsplit(url).query else "?") + urlencode(_pairs(params))
    send_headers = urllib3.HTTPHeaderDict(
        {
            "User-Agent": settings.NOTIFICATIONS_USER_AGENT,
            "Accept": "*/*",
            "Accept-Encoding": _ACCEPT_ENCODING,
        }
    )
    body: bytes | None = None
    if json is not None:
        body = jsonlib.dumps(json, allow_nan=False).encode()
        send_headers["Content-Type"] = "application/json"
    elif isinstance(data, dict):
        body = urlencode(_pairs(data)).encode()
        send_headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif isinstance(data, str):
        body = data.encode()
    elif data is not None:
        body = data
    if auth is not None:
        send_headers.update(make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
    if headers:
        send_headers.update(headers)
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = b""
    connect, read = timeout or (
        settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT,
        settings.NOTIFICATIONS_HTTP_READ_TIMEOUT,
    )
    try:
        response = client.manager_for(url).urlopen(
            method,
            url,
            body=body,
            headers=send_headers,
            retries=False,
            redirect=False,
            timeout=client.timeout(connect, read),
            preload_content=True,
        )
    except ConnectTimeoutError as exc:
        # NewConnectionError (refused, name not resolved) is a ConnectTimeoutError too.
        raise ConnectFailed(
            _describe(exc), timed_out=not isinstance(exc, NewConnectionError)
        ) from exc
    except ReadTimeoutError as exc:
        raise AnswerTimeout(_describe(exc)) from exc
    except ProxyError as exc:
        cause = exc.original_error
        if isinstance(cause, ConnectTimeoutError):
            raise ConnectFailed(
                f"proxy: {_describe(cause)}",
                timed_out=not isinstance(cause, NewConnectionError),
            ) from exc
        raise ConnectionLost(_describe(exc)) from exc
    except LocationValueError as exc:
        # No host, an unknown scheme: a configuration mistake, caught before connecting.
        raise InvalidUrl(f"{url!r} cannot be called: {exc}") from exc
    except SSLError as exc:  # before HTTPError, its base
        if _certificate_refused(exc):
            # Verification is part of the handshake: nothing was sent.
            raise ConnectFailed(f"certificate refused: {_describe(exc)}") from exc
        raise ConnectionLost(_describe(exc)) from exc
    except HTTPError as exc:
        # ProtocolError (reset, closed mid-answer), another SSLError, DecodeError, ...
        raise ConnectionLost(_describe(exc)) from exc
    return HttpResponse(
        status_code=response.status,
        reason=response.reason or "",
        headers=response.headers,
        content=response.data,
        url=url,
    )


class PooledSession:
    """The `requests.Session` face a library that posts for us (pywebpush) needs, over
    this process's pools: `post(url, data=..., headers=..., timeout=...)`."""

    def post(self, url: str, **kwargs) -> HttpResponse:
        return http_request("POST", url, **kwargs)


def _pairs(values: dict) -> list[tuple[str, Any]]:
    """A dict as form pairs, as `requests` encoded one: a list value is repeated, a None
    value is left out."""
    pairs = []
    for name, value in values.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                pairs.append((name, item))
    return pairs


def _certificate_refused(exc: SSLError) -> bool:
    pending: list = [exc]
    seen: set[int] = set()
    while pending:
        err = pending.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            return True
        pending += [err.__cause__, err.__context__, *err.args]
    return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
