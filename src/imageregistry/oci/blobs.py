"""Blob HEAD, GET (whole, zero-copy; or one `Range` → 206) and DELETE.

A blob is served only when the metadata links it to the repository and GC is not deleting it
(docs/architecture.md#garbage-collection: no existence cache outside the database). A whole blob is
sent with `FileResponse` so Granian can use ASGI pathsend, or, with the blob port on and at least
`REDIRECT_MIN_SIZE` bytes, redirected there for a true sendfile(2) (a blob in object storage with
`redirect: false`: for the port's relay, `blobport.relay`); a single byte range answers 206
with `Content-Range`, an unsatisfiable or malformed one 416 (RFC 9110 §14). The entity tag is the
digest itself (`httpbits`; the same on every replica, unlike one derived from file metadata),
and a matching `If-None-Match` answers 304 before any range is considered (RFC 9110 §13.2.2). DELETE
unlinks the blob from the repository; the bytes stay until registry GC.

Every HEAD and GET compares the stored size with the recorded one before answering (a GET
whose bytes come from the store lets the read check it, in the same request to an object
store): a blob damaged in storage (or marked corrupt by `ac adm registry verify`) answers
404 `BLOB_UNKNOWN` with a message saying so, and is logged, never sent short. The 404 is
deliberate: a client pushing the same blob then uploads it again, and that upload repairs
the stored copy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from imageregistry.content.digest import Digest
from imageregistry.httpbits import OCTET, REDIRECT_MIN_SIZE, digest_etag, etag_matches, parse_range
from imageregistry.oci import notify
from imageregistry.oci.context import Ctx
from imageregistry.oci.errors import RegistryError
from imageregistry.storage.errors import BlobNotFound, StoredSizeDiffers

log = logging.getLogger(__name__)


async def get_blob(ctx: Ctx) -> Response:
    digest = Digest.parse(ctx.arg)
    size = await ctx.run(ctx.registry.meta.blob_size, ctx.repo, str(digest))
    etag = digest_etag(str(digest))
    headers = {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes", "ETag": etag}
    if etag_matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    answer = await _answer(ctx, digest, size, headers)
    notifier = ctx.registry.notifier  # GET and HEAD, as distribution reports them
    notify.blob_pulled(notifier, ctx.request.scope, ctx.user, ctx.repo, str(digest), size)
    return answer


async def _answer(ctx: Ctx, digest: Digest, size: int, headers: dict[str, str]) -> Response:
    """The answer to a HEAD or GET, once the stored size is known to be the recorded one:
    checked first, or (bytes streamed from the store) by the read itself, so a whole blob
    streamed from object storage costs the store one request."""
    range_header = ctx.request.headers.get("range")
    if range_header:
        return await _ranged(ctx, digest, size, range_header, headers)
    store = ctx.registry.blobs
    if ctx.is_head:
        await _check_stored_size(ctx, digest, size)
        headers["Content-Length"] = str(size)
        return Response(status_code=200, headers=headers, media_type=OCTET)
    redirect = await store.redirect_url(digest)
    if redirect is not None:
        await _check_stored_size(ctx, digest, size)
        return RedirectResponse(redirect, status_code=307, headers=headers)
    path = store.local_path(digest)
    if path is not None:
        await _check_stored_size(ctx, digest, size)
    links = ctx.registry.blob_links
    if links is not None and size >= REDIRECT_MIN_SIZE and (path is not None or store.relays):
        # The blob port sends the file, or relays the object (and checks its size then).
        location = links.url_for(digest, ctx.request.url.hostname or "", size)
        return RedirectResponse(location, status_code=307, headers=headers)
    if path is not None:
        return FileResponse(path, headers=headers, media_type=OCTET)
    stream = await _read(ctx, digest, size)
    headers["Content-Length"] = str(size)
    return StreamingResponse(stream, headers=headers, media_type=OCTET)


async def _check_stored_size(ctx: Ctx, digest: Digest, recorded: int) -> None:
    """Refuse (404, logged) a blob whose stored size is not the recorded size."""
    stored = await ctx.registry.blobs.stat(digest)
    if stored != recorded:
        _refuse_damaged(digest, stored, recorded)


async def _read(
    ctx: Ctx, digest: Digest, recorded: int, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """The bytes `[start, end)`, refused like `_check_stored_size` when the stored size is
    not the recorded one (the store checks it as it opens the read)."""
    try:
        return await ctx.registry.blobs.read(digest, start, end, expected_size=recorded)
    except BlobNotFound:
        _refuse_damaged(digest, None, recorded)
    except StoredSizeDiffers as differs:
        _refuse_damaged(digest, differs.stored, recorded)


def _refuse_damaged(digest: Digest, stored: int | None, recorded: int) -> NoReturn:
    found = "is missing" if stored is None else f"has {stored} bytes"
    log.error(
        "blob %s %s in storage but %d bytes are recorded; refused "
        "(push it again to repair it; `ac adm registry verify` finds others)",
        digest,
        found,
        recorded,
    )
    raise RegistryError(
        "BLOB_UNKNOWN", f"blob {digest} is damaged in the registry's storage; push it again"
    )


async def _ranged(
    ctx: Ctx, digest: Digest, size: int, header: str, headers: dict[str, str]
) -> Response:
    span = parse_range(header, size)
    if span is None:
        raise RegistryError(
            "RANGE_INVALID",
            f"range {header[:60]!r} cannot be satisfied for a blob of {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if ctx.is_head:
        await _check_stored_size(ctx, digest, size)
        return Response(status_code=206, headers=headers, media_type=OCTET)
    stream = await _read(ctx, digest, size, start, end + 1)
    return StreamingResponse(stream, status_code=206, headers=headers, media_type=OCTET)


async def delete_blob(ctx: Ctx) -> Response:
    digest = Digest.parse(ctx.arg)
    notifier = ctx.registry.notifier
    await notify.settle_pulls(notifier)
    emit = notify.deleted(notifier, ctx.request.scope, ctx.user, ctx.repo, digest=str(digest))
    await ctx.run(ctx.registry.meta.unlink_blob, ctx.repo, str(digest), emit)
    if notifier is not None:
        notifier.committed()
    return Response(status_code=202, headers={"Content-Length": "0"})
