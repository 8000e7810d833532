"""The one point where every request of the main port is counted and given its id.

A plain ASGI middleware (no `BaseHTTPMiddleware`: that would copy every body through a
queue): it names the route template from the path (`observability.routes`), watches the
`http.response.start` message for the status code and the body size, and counts the
request body only for methods that carry one, so a manifest GET costs a dictionary lookup,
a counter increment and a histogram observation. Responses Granian sends itself
(`http.response.pathsend`, zero-copy files) are counted by their `Content-Length`.
The same pass sets the request id (`observability.requestid`) for the request's logs and
adds it to the response as `X-Request-Id`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageregistry.observability import requestid
from imageregistry.observability.metrics import Metrics
from imageregistry.observability.routes import UPLOAD, UPLOAD_START, classify

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_BLOB_ROUTE = "/v2/{name}/blobs/{digest}"
_REDIRECTS = frozenset((302, 303, 307, 308))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
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

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state[0] = message["status"]
                headers = message.get("headers", ())
                for name, value in headers:
                    if name == b"content-length" or name.lower() == b"content-length":
                        state[2] = int(value)
                        break
                message = {**message, "headers": [*headers, id_header]}
            elif kind == "http.response.body":
                state[1] += len(message.get("body", b""))
            await send(message)

        received = 0
        inner_receive = receive
        if method in _BODY_METHODS:

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                return message

            inner_receive = counting_receive
        upload = route in (UPLOAD, UPLOAD_START) and method in _BODY_METHODS
        if upload:
            self.metrics.uploads_in_progress.inc()
        try:
            await self.app(scope, inner_receive, counting_send)
        finally:
            requestid.current.reset(token)
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
