"""The blob port's route table (`BLOB_PORT_ROUTES`) and its dispatcher (`BlobPortDispatcher`).

The port's chain (docs/architecture.md#request-pipelines): request info (`PortRequest`,
from h11's request head) → route (the method, then the path) → authorization: the signed
link (`SignedLink`, checked by `links.BlobLinks.grant`) → handler (`send_blob`) → one error
renderer, `server._Connection.render`, which answers every `RegistryError` the chain raises
in the OCI envelope. The port has no credentials and no database: its access review is the
one the main port took before it minted the link.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.blobport.links import PATH_PREFIX, BlobLinks, LinkRefused
from imageregistry.errorcodes import RegistryError
from imageregistry.httpbits import OCTET, digest_etag, etag_matches, parse_range
from imageregistry.storage.driver import BlobStore

log = logging.getLogger("imageregistry.blobport.server")  # the port's one logger name


@dataclass(frozen=True)
class SignedLink:
    """Access by a link the main port signed: `action` was reviewed there (links are handed
    out by `oci.blobs.get_blob`, after its route's pull review), and here only the link's
    HMAC, expiry and recorded size are checked (`BlobLinks.grant`)."""

    action: RegistryAction

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return (self.action,)


@dataclass(frozen=True)
class PortRequest:
    """The request info: what the head of one request asked for."""

    method: str
    target: str  # path and query as sent (the query holds the link's signature: never log it)
    fields: Mapping[str, str]  # header fields, names lower-case


@dataclass(frozen=True)
class Grant:
    """What the link grants: the blob's local file (None: not stored here), its digest
    and the size the link records (None for a link without one)."""

    path: str | None
    digest: str
    recorded: int | None


class Exchange(Protocol):
    """What a handler may send on the connection (`server._Connection`)."""

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    async def send_file(self, fd: int, offset: int, count: int) -> None: ...

    async def end(self) -> None: ...


Handler = Callable[[PortRequest, Grant, Exchange], Awaitable[None]]


@dataclass(frozen=True)
class PortRoute:
    """A path shape of the port: `template` as the request metrics name it."""

    template: str
    prefix: str
    endpoints: Mapping[str, Handler]
    access: SignedLink


async def send_blob(request: PortRequest, grant: Grant, exchange: Exchange) -> None:
    """The blob, whole or one `Range`, with sendfile(2); 304 for a matching `If-None-Match`.
    A stored file whose size is not the one the link records is refused, never sent short
    (or long) under the digest's name."""
    try:
        if grant.path is None:
            raise FileNotFoundError(grant.digest)
        fd = os.open(grant.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone (registry GC) or never stored
        raise RegistryError("BLOB_UNKNOWN", f"blob {grant.digest} is not stored here") from None
    try:
        size = os.fstat(fd).st_size
        if grant.recorded is not None and size != grant.recorded:
            log.error(
                "blob port: blob %s has %d bytes in storage but %d recorded; refused "
                "(push it again to repair it; `ac adm registry verify` finds others)",
                grant.digest,
                size,
                grant.recorded,
            )
            message = f"blob {grant.digest} is damaged in the registry's storage; push it again"
            raise RegistryError("BLOB_UNKNOWN", message)
        await _send(request, exchange, fd, grant.digest, size)
    finally:
        os.close(fd)


async def _send(request: PortRequest, exchange: Exchange, fd: int, digest: str, size: int) -> None:
    etag = digest_etag(digest)
    headers = [("Docker-Content-Digest", digest), ("Accept-Ranges", "bytes"), ("ETag", etag)]
    if etag_matches(request.fields.get("if-none-match"), etag):
        await exchange.start(304, headers)
        await exchange.end()
        return
    status, offset, count = 200, 0, size
    if "range" in request.fields:
        span = parse_range(request.fields["range"], size)
        if span is None:
            message = f"range cannot be satisfied for a blob of {size} bytes"
            refused = {"Content-Range": f"bytes */{size}"}
            raise RegistryError("RANGE_INVALID", message, headers=refused)
        status, offset, count = 206, span[0], span[1] - span[0] + 1
        headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
    headers += [("Content-Type", OCTET), ("Content-Length", str(count))]
    await exchange.start(status, headers)
    if request.method == "GET" and count:
        await exchange.send_file(fd, offset, count)
    await exchange.end()


BLOB_PORT_ROUTES: tuple[PortRoute, ...] = (
    PortRoute(
        "/blobs/{digest}",
        PATH_PREFIX,
        {"GET": send_blob, "HEAD": send_blob},
        SignedLink(RegistryAction.PULL),
    ),
)
METHODS = tuple(sorted({method for route in BLOB_PORT_ROUTES for method in route.endpoints}))


class BlobPortDispatcher:
    """The blob port's chain: method → link check (the route's access) → handler; every
    refusal is raised as a `RegistryError` for the connection's one renderer."""

    def __init__(self, links: BlobLinks, store: BlobStore) -> None:
        self.links = links
        self.store = store

    async def dispatch(self, request: PortRequest, exchange: Exchange) -> None:
        if request.method not in METHODS:
            # Its body is not read, so the connection ends: say so, or a client that
            # reuses it races the close and gets a reset.
            message = "the blob port answers GET and HEAD only"
            headers = {"Connection": "close", "Allow": ", ".join(METHODS)}
            raise RegistryError("UNSUPPORTED", message, headers=headers)
        target = urlsplit(request.target)
        try:
            query = dict(parse_qsl(target.query, max_num_fields=16))
            route = _route(target.path)
            # Where a request's route template, declared access and outcome are all known.
            route, grant = self._authorize(route, target.path, query)
        except ValueError:
            raise RegistryError("BAD_REQUEST", "the query string is not a link's") from None
        await route.endpoints[request.method](request, grant, exchange)

    def _authorize(
        self, route: PortRoute | None, path: str, query: Mapping[str, str]
    ) -> tuple[PortRoute, Grant]:
        """The route's `SignedLink` access: the link must be this port's, unexpired and
        for this digest (404 or 403 otherwise). A link names its path, so a path outside
        the table is refused by the same check (404 `NOT_FOUND`), and the request record
        shows it as a refused link like any other."""
        try:
            digest, size = self.links.grant(path, query)
        except LinkRefused as exc:
            raise RegistryError(exc.code, str(exc), status=exc.status) from None
        if route is None:  # (a link is only ever granted for a path in the table)
            raise RegistryError("NOT_FOUND", "the blob port serves /blobs/<digest> only")
        return route, Grant(self.store.local_path(digest), str(digest), size)


def _route(path: str) -> PortRoute | None:
    return next((route for route in BLOB_PORT_ROUTES if path.startswith(route.prefix)), None)
