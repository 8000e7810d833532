"""Request ids, metrics and audit events for the listeners that are not the ASGI app: the
blob port (`blobport.server`) and `metrics_listen` (`observability.listener`).

They speak HTTP/1.1 with h11 on the worker's event loop, so `MetricsMiddleware` cannot
wrap them; `PortObserver.begin` does for one of their requests what it does for a main-port
request: the id (the client's `X-Request-Id` when well-formed, else a new one) for the
response's header and the request's log lines, a `RequestInfo` in the context for the
seams to fill in, and at the end (`PortRequest.end`) the request's series and its audit
event, at the level the policy gives it.

The blob port authenticates nobody: a signed link is the capability a main-port pull
handed out (`blobport.links`). Its requests are therefore recorded as the link holder's,
`system:anonymous`, and its one authorization point is the link check: `NotingLinks`
notes it as the access review a blob pull is (`get imagestreams/layers`; the link names
no repository, so no namespace or name), allowed when the link is good. The query of a
blob-port request holds the link's signature and is never recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from imageregistry.auth.authorizer import RegistryAction, registry_attributes
from imageregistry.auth.identity import anonymous
from imageregistry.blobport.links import BlobLinks, LinkRefused
from imageregistry.content.digest import Digest
from imageregistry.observability import requestid, requestinfo
from imageregistry.observability.audit import ERROR_BODY_LIMIT, Auditor
from imageregistry.observability.metrics import Metrics

HEADER_NAME = b"X-Request-Id"
LINK_REASON = "a signed blob link"


class PortRequest:
    """One request of such a port, from `PortObserver.begin` to `end`."""

    __slots__ = ("_info", "_observer", "_started", "_token", "header", "request_id")

    def __init__(self, observer: PortObserver, info: requestinfo.RequestInfo) -> None:
        self._observer = observer
        self._info = info
        self._started = time.perf_counter()
        self._token = requestinfo.current.set(info)
        self.request_id = info.request_id
        self.header = (HEADER_NAME, info.request_id.encode("ascii"))  # for the response

    def end(self, status: int, sent: int, error_body: bytes = b"", raised: bool = False) -> None:
        """The response is over (or the connection failed while sending it)."""
        requestinfo.current.reset(self._token)
        observer, info = self._observer, self._info
        if observer.auditor is not None:
            message = error_body[:ERROR_BODY_LIMIT] if status >= 400 else b""
            observer.auditor.complete(info, status or 500, message, raised)
        if observer.metrics is not None:
            seconds = time.perf_counter() - self._started
            observer.metrics.record_request(
                observer.surface, observer.route, info.method, status, seconds, sent, 0
            )


class PortObserver:
    """Begins the observation of each request of one port (its series are labelled
    `surface` and `route`; `metrics` None: not counted)."""

    def __init__(
        self, metrics: Metrics | None, auditor: Auditor | None, surface: str, route: str
    ) -> None:
        self.metrics = metrics
        self.auditor = auditor
        self.surface = surface
        self.route = route
        self._ids = requestid.IdSource()

    def begin(
        self,
        method: bytes,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        client: Any = None,
    ) -> PortRequest:
        """`path` without its query; `headers` as h11 gives them (names in lower case);
        `client` the peer address (host, port)."""
        given = None
        kept = []
        for name, value in headers:
            if name == requestid.HEADER and given is None:
                given = value
            elif name in requestinfo.SOURCE_HEADERS:
                kept.append((name, value))
        scope = {
            "type": "http",
            "method": method.decode("ascii", "replace"),
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": b"",  # never recorded: a blob link's holds its signature
            "headers": kept,
            "client": client if isinstance(client, tuple) else None,
        }
        info = requestinfo.RequestInfo(scope, self._ids.choose(given), time.time())
        info.source = kept
        if self.auditor is not None:
            info.listener = self.auditor
        return PortRequest(self, info)

    def new_header(self) -> tuple[bytes, bytes]:
        """An id for an answer that belongs to no request (one h11 could not parse)."""
        return HEADER_NAME, self._ids.choose(None).encode("ascii")


class NotingLinks(BlobLinks):
    """The blob port's links, noting each check as the request's access review (see the
    module docstring)."""

    def grant(self, path: str, query: Mapping[str, str]) -> tuple[Digest, int | None]:
        user = anonymous()
        requestinfo.note_user(user)
        attrs = registry_attributes(user, RegistryAction.PULL)
        try:
            granted = super().grant(path, query)
        except LinkRefused as exc:
            requestinfo.note_decision(attrs, False, str(exc))
            raise
        requestinfo.note_decision(attrs, True, LINK_REASON)
        return granted

    @classmethod
    def wrapping(cls, links: BlobLinks) -> NotingLinks:
        return cls(links.key, links.listen, links.public_url, links.clock)
