"""The one point where every request of the main port is counted and given its id.

A plain ASGI middleware (no `BaseHTTPMiddleware`: that would copy every body through a
queue): it names the route template from the path (`observability.routes`, remembered
per path), watches the `http.response.start` message for the status code and counts the
body bytes it passes on; the request body only for methods that carry one. Responses
Granian sends itself (`http.response.pathsend`, zero-copy files) are counted by their
`Content-Length`. The same pass sets the request id (`observability.requestid`) for the
request's logs and adds it to the response as `X-Request-Id`, makes the request's
`RequestInfo` (who asked what from where, `observability.requestinfo`) and, when an audit
log is configured, hands it to the `Auditor` at the start and at the end
(`observability.audit`): the error body's first bytes for the event's message, the JSON
bodies when the policy level keeps them.

This runs for every request, so it is written for the manifest GET's sake
(docs/benchmarks.md, "Metrics on the manifest GET"): one pass over the request headers
(the id, and with an audit log the few headers its event names), one context variable,
the response headers extended in the message the inner layer built, and the series
updated through one call on pre-bound children.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageregistry.observability import requestid, requestinfo
from imageregistry.observability.audit import ERROR_BODY_LIMIT, Auditor, is_json
from imageregistry.observability.metrics import Metrics
from imageregistry.observability.routes import UPLOAD, UPLOAD_START, classify

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_BLOB_ROUTE = "/v2/{name}/blobs/{digest}"
_REDIRECTS = frozenset((302, 303, 307, 308))
_ROUTE_CACHE_LIMIT = 4096
_HEADER = requestid.HEADER
_SOURCE_HEADERS = requestinfo.SOURCE_HEADERS


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, auditor: Auditor | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.auditor = auditor
        self.ids = requestid.IdSource()
        self._routes: dict[str, tuple[str, str]] = {}

    def _route(self, path: str) -> tuple[str, str]:
        if len(self._routes) >= _ROUTE_CACHE_LIMIT:  # many distinct paths: start over
            self._routes.clear()
        named = self._routes[path] = classify(path)
        return named

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        surface, route = self._routes.get(path) or self._route(path)
        method: str = scope["method"]
        auditor = self.auditor
        given = None
        source: list[tuple[bytes, bytes]] | None = None
        if auditor is None:
            for name, value in scope["headers"]:
                if name == _HEADER:  # ASGI servers send header names in lower case
                    given = value
                    break
        else:  # the same pass keeps what the event's source fields are made of
            source = []
            for item in scope["headers"]:
                name = item[0]
                if name == _HEADER:
                    given = item[1]
                elif name in _SOURCE_HEADERS:
                    source.append(item)
        request_id = self.ids.choose(given)
        id_header = (_HEADER, request_id.encode("ascii"))
        info = requestinfo.RequestInfo(scope, request_id, time.time())
        token = requestinfo.current.set(info)
        response: list[Any] = [500, 0, ()]  # status (unless one starts), body bytes, headers
        error_body: list[bytes] = []  # an error answer's first bytes, for the audit message
        if auditor is not None:
            info.listener = auditor  # Auditor.begin, inlined: this runs for every request
            info.source = source

        async def observed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body", b"")
                response[1] += len(body)
                if error_body or (info.audit is not None and info.audit.response_body is not None):
                    _audit_body(info, body, error_body)
            elif kind == "http.response.start":
                status = response[0] = message["status"]
                headers = response[2] = message.get("headers", ())
                # the message is this response's own; its header list may not be
                message["headers"] = [*headers, id_header]
                if auditor is not None and (
                    status >= 400
                    or (info.audit is not None and info.audit.response_body is not None)
                ):
                    _audit_response_start(info, status, headers, error_body)
            elif kind == "http.response.pathsend":
                response[1] += _content_length(response[2])
            await send(message)

        received = 0
        inner_receive = receive
        if method in _BODY_METHODS:

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    body = message.get("body", b"")
                    received += len(body)
                    audit = info.audit
                    if audit is not None and audit.request_body is not None:
                        audit.keep_request(body)
                return message

            inner_receive = counting_receive
        upload = method in _BODY_METHODS and route in (UPLOAD, UPLOAD_START)
        if upload:
            self.metrics.uploads_in_progress.inc()
        raised = True
        try:
            await self.app(scope, inner_receive, observed_send)
            raised = False
        finally:
            requestinfo.current.reset(token)
            status = response[0]
            if auditor is not None:
                auditor.complete(
                    info, status, b"".join(error_body[1:]) if error_body else b"", raised
                )
            if upload:
                self.metrics.uploads_in_progress.dec()
            self.metrics.record_request(
                surface,
                route,
                method,
                status,
                time.perf_counter() - started,
                0 if method == "HEAD" else response[1],
                received,
            )
            if status in _REDIRECTS and route == _BLOB_ROUTE:
                self.metrics.blob_redirects.inc()


def _content_length(headers: Any) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value)
    return 0


def _audit_response_start(
    info: requestinfo.RequestInfo,
    status: int,
    headers: Any,
    error_body: list[bytes],
) -> None:
    """Keep an error answer's first bytes (for the event's message); keep the response
    only when it is JSON (when the level wants it at all)."""
    if status >= 400:
        error_body.append(b"")  # a marker: the body chunks follow it
    audit = info.audit
    if audit is not None and audit.response_body is not None:
        content_type = b""
        for name, value in headers:
            if name.lower() == b"content-type":
                content_type = bytes(value)
                break
        if not is_json(content_type):
            audit.response_body = None


def _audit_body(info: requestinfo.RequestInfo, body: bytes, error_body: list[bytes]) -> None:
    if error_body and sum(len(b) for b in error_body) < ERROR_BODY_LIMIT:
        error_body.append(body[:ERROR_BODY_LIMIT])
    audit = info.audit
    if audit is not None and audit.response_body is not None:
        audit.keep_response(body)
