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
from typing import NoReturn, Protocol
from urllib.parse import parse_qsl, urlsplit

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.blobport.links import PATH_PREFIX, BlobLinks, LinkRefused
from imageregistry.content.digest import Digest
from imageregistry.errorcodes import RegistryError
from imageregistry.httpbits import OCTET, digest_etag, etag_matches, parse_range
from imageregistry.storage.driver import BlobStore, RelayMethod, RelaySource
from imageregistry.storage.errors import StorageUnavailable
from imageregistry.storage.presigned import Upstream, UpstreamFailed

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
    """What the link grants: the blob's local file (None: not stored here), its digest,
    the size the link records (None for a link without one), and the store to relay the
    blob from when it has no local file (None: the store has nothing to relay)."""

    path: str | None
    digest: str
    recorded: int | None
    relay_from: BlobStore | None = None


class Exchange(Protocol):
    """What a handler may send on the connection (`server._Connection`)."""

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    async def send_file(self, fd: int, offset: int, count: int) -> None: ...

    async def fetch(
        self, source: RelaySource, method: RelayMethod, span: tuple[int, int] | None
    ) -> Upstream: ...

    async def send_relayed(self, upstream: Upstream, count: int) -> None: ...

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
    """The blob, whole or one `Range`: a local file with sendfile(2), a blob in object
    storage relayed (`relay_blob`); 304 for a matching `If-None-Match`. A stored blob
    whose size is not the one the link records is refused, never sent short (or long)
    under the digest's name."""
    if grant.path is None and grant.relay_from is not None:
        await relay_blob(request, grant, grant.relay_from, exchange)
        return
    try:
        if grant.path is None:
            raise FileNotFoundError(grant.digest)
        fd = os.open(grant.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone (registry GC) or never stored
        raise RegistryError("BLOB_UNKNOWN", f"blob {grant.digest} is not stored here") from None
    try:
        size = os.fstat(fd).st_size
        if grant.recorded is not None and size != grant.recorded:
            _refuse_damaged(grant, f"has {size} bytes")
        headers = _entity_headers(grant.digest)
        if await _not_modified(request, exchange, grant.digest, headers):
            return
        status, span = _span(request, size, headers)
        offset, count = (0, size) if span is None else (span[0], span[1] - span[0] + 1)
        headers += [("Content-Type", OCTET), ("Content-Length", str(count))]
        await exchange.start(status, headers)
        if request.method == "GET" and count:
            await exchange.send_file(fd, offset, count)
        await exchange.end()
    finally:
        os.close(fd)


async def relay_blob(
    request: PortRequest, grant: Grant, store: BlobStore, exchange: Exchange
) -> None:
    """A blob held in object storage: the port makes the store's presigned request itself
    (`relay.open_upstream`, with the client's `Range`) and passes the answer on. The
    stored size comes with that answer and is checked before anything is sent. A link
    without a recorded size is answered whole (a server may ignore `Range`)."""
    headers = _entity_headers(grant.digest)
    if await _not_modified(request, exchange, grant.digest, headers):
        return
    status, span = (
        (200, None) if grant.recorded is None else _span(request, grant.recorded, headers)
    )
    method: RelayMethod = "HEAD" if request.method == "HEAD" else "GET"
    source = await store.relay_source(Digest.parse(grant.digest), method)
    if source is None:
        raise RegistryError("BLOB_UNKNOWN", f"blob {grant.digest} is not stored here")
    try:
        upstream = await exchange.fetch(source, method, span)
    except UpstreamFailed as exc:
        _refuse_unavailable(grant, str(exc))
    try:
        stored = _relayed_size(grant, upstream, span)
        count = stored if span is None else span[1] - span[0] + 1
        headers += [("Content-Type", OCTET), ("Content-Length", str(count))]
        await exchange.start(status, headers)
        if method == "GET" and count:
            try:
                await exchange.send_relayed(upstream, count)
            except UpstreamFailed as exc:  # the answer has begun: the connection ends short
                log.warning(
                    "blob port: the object store failed while relaying blob %s: %s",
                    grant.digest,
                    exc,
                )
                raise ConnectionAbortedError(str(exc)) from None
        await exchange.end()
    finally:
        upstream.close()


def _relayed_size(grant: Grant, upstream: Upstream, span: tuple[int, int] | None) -> int:
    """The stored size the store's answer gives; refusals for an answer that is not the
    bytes asked for (404 and 416 mean the stored blob is missing or shorter)."""
    if upstream.status == 404:
        _refuse_damaged(grant, "is missing")
    if upstream.status == 416:
        _refuse_damaged(grant, "is shorter")
    stored = upstream.object_size()
    if upstream.status != (200 if span is None else 206) or stored is None:
        _refuse_unavailable(grant, f"it answered HTTP {upstream.status}")
    if grant.recorded is not None and stored != grant.recorded:
        _refuse_damaged(grant, f"has {stored} bytes")
    return stored


def _entity_headers(digest: str) -> list[tuple[str, str]]:
    return [
        ("Docker-Content-Digest", digest),
        ("Accept-Ranges", "bytes"),
        ("ETag", digest_etag(digest)),
    ]


async def _not_modified(
    request: PortRequest, exchange: Exchange, digest: str, headers: list[tuple[str, str]]
) -> bool:
    """Answer 304 (True) when `If-None-Match` names the blob's entity tag."""
    if not etag_matches(request.fields.get("if-none-match"), digest_etag(digest)):
        return False
    await exchange.start(304, headers)
    await exchange.end()
    return True


def _span(
    request: PortRequest, size: int, headers: list[tuple[str, str]]
) -> tuple[int, tuple[int, int] | None]:
    """The status and inclusive byte span a `Range` asks for (None: the whole blob), with
    its `Content-Range` added to `headers`; 416 for one that cannot be satisfied."""
    if "range" not in request.fields:
        return 200, None
    span = parse_range(request.fields["range"], size)
    if span is None:
        message = f"range cannot be satisfied for a blob of {size} bytes"
        refused = {"Content-Range": f"bytes */{size}"}
        raise RegistryError("RANGE_INVALID", message, headers=refused)
    headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
    return 206, span


def _refuse_damaged(grant: Grant, found: str) -> NoReturn:
    log.error(
        "blob port: blob %s %s in storage but %s recorded; refused "
        "(push it again to repair it; `ac adm registry verify` finds others)",
        grant.digest,
        found,
        "no size is" if grant.recorded is None else f"{grant.recorded} bytes are",
    )
    message = f"blob {grant.digest} is damaged in the registry's storage; push it again"
    raise RegistryError("BLOB_UNKNOWN", message)


def _refuse_unavailable(grant: Grant, detail: str) -> NoReturn:
    log.warning(
        "blob port: the object store failed while relaying blob %s: %s", grant.digest, detail
    )
    raise RegistryError(
        "UNAVAILABLE",
        "the registry's object storage is unavailable; retry later",
        headers={"Retry-After": str(StorageUnavailable.retry_after)},
    )


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
        relay_from = self.store if self.store.relays else None
        return route, Grant(self.store.local_path(digest), str(digest), size, relay_from)


def _route(path: str) -> PortRoute | None:
    return next((route for route in BLOB_PORT_ROUTES if path.startswith(route.prefix)), None)
