"""The one point where every request of the main port is counted and given its id.

A plain ASGI middleware (no `BaseHTTPMiddleware`: that would copy every body through a
queue): it names the route template from the path (`observability.routes`), watches the
`http.response.start` message for the status code and the body size, and counts the
request body only for methods that carry one, so a manifest GET costs a dictionary lookup,
a counter increment and a histogram observation. Responses Granian sends itself
(`http.response.pathsend`, zero-copy files) are counted by their `Content-Length`.
The same pass sets the request id (`observability.requestid`) for the request's logs and
adds it to the response as `X-Request-Id`, makes the request's `RequestInfo` (who asked
what from where, `observability.requestinfo`) and, when an audit log is configured, hands
it to the `Auditor` at the start and at the end (`observability.audit`): the error body's
first bytes for the event's message, the JSON bodies when the policy level keeps them.
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


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, auditor: Auditor | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.auditor = auditor
        self.ids = requestid.IdSource()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        surface, route = classify(scope["path"])
        method: str = scope["method"]
        state: list[Any] = [500, 0, None]  # status, body bytes seen, Content-Length
        given = None
        for name, value in scope["headers"]:
            if name == requestid.HEADER:  # ASGI servers send header names in lower case
                given = value
                break
        request_id = self.ids.choose(given)
        id_header = (requestid.HEADER, request_id.encode("ascii"))
        token = requestid.current.set(request_id)
        info = requestinfo.RequestInfo(scope, request_id, time.time())
        info_token = requestinfo.current.set(info)
        auditor = self.auditor
        error_body: list[bytes] = []  # an error answer's first bytes, for the audit message
        if auditor is not None:
            info.listener = auditor  # Auditor.begin, inlined: this runs for every request

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status = state[0] = message["status"]
                headers = message.get("headers", ())
                for name, value in headers:
                    if name == b"content-length" or name.lower() == b"content-length":
                        state[2] = int(value)
                        break
                message = {**message, "headers": [*headers, id_header]}
                if auditor is not None:
                    _audit_response_start(info, status, headers, error_body)
            elif kind == "http.response.body":
                body = message.get("body", b"")
                state[1] += len(body)
                audit = info.audit
                if error_body or (audit is not None and audit.response_body is not None):
                    _audit_body(info, body, error_body)
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
        upload = route in (UPLOAD, UPLOAD_START) and method in _BODY_METHODS
        if upload:
            self.metrics.uploads_in_progress.inc()
        raised = True
        try:
            await self.app(scope, inner_receive, counting_send)
            raised = False
        finally:
            requestid.current.reset(token)
            requestinfo.current.reset(info_token)
            if auditor is not None:
                auditor.complete(info, state[0], b"".join(error_body[1:]), raised)
            if upload:
                self.metrics.uploads_in_progress.dec()
            status = state[0]
            children = self.metrics.request_children(surface, route, method, status)
            children.count.inc()
            children.duration.observe(time.perf_counter() - started)
            sent = state[1] if state[2] is None or method == "HEAD" else state[2]
            if method == "HEAD":
                sent = 0
            if sent:
                children.sent.inc(sent)
            if received:
                children.received.inc(received)
            if status in _REDIRECTS and route == _BLOB_ROUTE:
                self.metrics.blob_redirects.inc()


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
