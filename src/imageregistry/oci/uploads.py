"""Blob uploads: POST (session, monolithic `?digest=`, cross-repository mount), PATCH
(chunked with `Content-Range`, or streamed), PUT (complete), GET (status), DELETE (cancel).

Session state lives in the `uploads` table and the blob store's staging area, never in process
memory, so a session continues on another worker or replica and survives a restart. A chunk that
does not start where the staged data ends answers 416 with the current `Range` and leaves the
session usable (docs/clients.md#the-conformance-suites-client). A blob becomes visible only after
the store verified its digest and published it atomically *and* the metadata transaction linked it,
so a crash at any point exposes nothing partial.

Each identity may have `upload_max_open_per_user` sessions open and
`upload_max_staged_bytes_per_user` bytes staged in them (room for a chunk is reserved
before it streams); beyond either, 429 `TOOMANYREQUESTS` with `Retry-After`, so
abandoned sessions cannot pile up without bound.

An upload of a blob that a GC sweep is deleting at that moment waits for the sweep to
finish with it (at most `SWEEP_WAIT_SECONDS`) before publishing its bytes: published
earlier, they would be deleted by the sweep and the client told to upload again (which
clients other than a registry's own tests do not do). The sweep deletes bytes, then rows,
and the next commit of the digest starts from no row, which GC never touches.

A full blob store (`StorageFull`) answers 507 with `Retry-After`: a session keeps the
bytes staged before the failure and the answer carries its `Range`, so the client
resumes (or retries the PUT) once space is freed; a monolithic upload is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator

from starlette.responses import Response

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.auth.identity import UserInfo
from imageregistry.content.digest import Digest, InvalidDigest
from imageregistry.content.reference import InvalidName, parse_repository
from imageregistry.httpinput import InputError, parse_int
from imageregistry.metadata.registry import (
    CORRUPT,
    DELETING,
    RepoKey,
    UploadLimitReached,
    UploadSession,
)
from imageregistry.oci import notify
from imageregistry.oci.context import Ctx
from imageregistry.oci.errors import RegistryError
from imageregistry.storage import errors as st

STORAGE_FULL_RETRY_SECONDS = 60
SWEEP_WAIT_SECONDS, SWEEP_POLL_SECONDS = 15.0, 0.05
UPLOAD_LIMIT_RETRY_SECONDS = 60
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def _location(repo: RepoKey, upload_id: str) -> str:
    return f"/v2/{repo}/blobs/uploads/{upload_id}"


def _session_headers(repo: RepoKey, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": _location(repo, upload_id),
        "Docker-Upload-UUID": upload_id,
        # Inclusive end of what is staged; "0-0" for an empty session (as distribution).
        "Range": f"0-{max(size - 1, 0)}",
        "Content-Length": "0",
    }


def _blob_created(repo: RepoKey, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{repo}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


def _query_digest(ctx: Ctx) -> Digest | None:
    raw = ctx.request.query_params.get("digest")
    if raw is None:
        return None
    return Digest.parse(raw)


async def start_upload(ctx: Ctx) -> Response:
    user = ctx.user
    registry = ctx.registry
    create_ns = ctx.may_create_namespace
    mounted = await _try_mount(ctx, user, create_ns)
    if mounted is not None:
        return mounted
    digest = _query_digest(ctx)
    await ctx.run(registry.meta.check_push_target, ctx.repo, create_ns)
    upload_id = str(uuid.uuid4())
    try:
        await registry.blobs.start_upload(upload_id)
    except st.StorageFull as exc:
        raise _storage_full(ctx, exc, None) from None
    if digest is not None:
        # Monolithic upload (spec "POST then PUT" collapsed): stage, verify, publish.
        try:
            await _append(ctx, upload_id, 0, user.username, tracked=False, final=digest)
            return await _complete(ctx, user, upload_id, digest, create_ns, tracked=False)
        except BaseException:
            with contextlib.suppress(st.StorageError):
                await registry.blobs.cancel_upload(upload_id)
            raise
    try:
        await ctx.run(
            registry.meta.create_upload,
            upload_id,
            ctx.repo,
            registry.now(),
            user.username,
            registry.upload_max_open_per_user,
        )
    except BaseException as exc:
        with contextlib.suppress(st.StorageError):
            await registry.blobs.cancel_upload(upload_id)
        if isinstance(exc, UploadLimitReached):
            raise _limit_reached(exc) from None
        raise
    return Response(status_code=202, headers=_session_headers(ctx.repo, upload_id, 0))


async def _try_mount(ctx: Ctx, user: UserInfo, create_ns: bool) -> Response | None:
    params = ctx.request.query_params
    raw, source_name = params.get("mount"), params.get("from")
    if not raw or not source_name:
        # A mount without `from`: a normal session (docs/clients.md#the-conformance-suites-client).
        return None
    try:
        digest = Digest.parse(raw)
        parsed = parse_repository(source_name)
    except (InvalidDigest, InvalidName):
        return None
    source = RepoKey(parsed.namespace, parsed.stream)
    if not await ctx.also_allowed(RegistryAction.PULL, source):
        return None  # docs/behaviour.md#access-control: fall back to a normal upload
    stored = await ctx.registry.blobs.stat(digest)
    if stored is None:
        return None
    notifier = ctx.registry.notifier
    await notify.settle_pulls(notifier)
    size = await ctx.run(
        ctx.registry.meta.mount_blob,
        source,
        ctx.repo,
        str(digest),
        ctx.registry.now(),
        create_ns,
        stored,
        notify.blob_mounted(notifier, ctx.request.scope, user, ctx.repo, str(digest), source),
    )
    if size is None:
        return None
    if notifier is not None:
        notifier.committed()
    return _blob_created(ctx.repo, digest)


async def _session(ctx: Ctx) -> UploadSession:
    return await ctx.run(ctx.registry.meta.find_upload, ctx.arg, ctx.repo)


def _limit_reached(exc: UploadLimitReached) -> RegistryError:
    return RegistryError(
        "TOOMANYREQUESTS", str(exc), headers={"Retry-After": str(UPLOAD_LIMIT_RETRY_SECONDS)}
    )


def _declared_chunk(ctx: Ctx, size: int) -> tuple[int, int | None]:
    """(offset, length) the chunk claims via Content-Range/Content-Length."""
    headers = ctx.request.headers
    try:
        text = headers.get("content-length")
        declared_length = parse_int(text, "Content-Length") if text else None
    except InputError as exc:
        raise RegistryError("SIZE_INVALID", str(exc)) from None
    raw = headers.get("content-range")
    if raw is None:
        return size, declared_length
    span = _content_range(raw)
    if span is None:
        raise _range_error(ctx, size, f"malformed Content-Range {raw[:60]!r}")
    start, end = span
    if declared_length is not None and declared_length != end - start + 1:
        raise _range_error(ctx, size, "Content-Length does not match Content-Range")
    if start != size:
        raise _range_error(ctx, size, f"chunk starts at {start} but {size} bytes are staged")
    return start, end - start + 1


def _storage_full(ctx: Ctx, exc: st.StorageFull, staged: int | None) -> RegistryError:
    """507 for a full store; with `staged` (a session's size), where to resume."""
    headers = {"Retry-After": str(STORAGE_FULL_RETRY_SECONDS)}
    if staged is None:
        hint = "nothing was stored; retry once space is freed"
    else:
        headers.update(_session_headers(ctx.repo, ctx.arg, staged))
        hint = f"{staged} bytes stay staged (see Range); resume once space is freed"
    return RegistryError("UNKNOWN", f"{exc}; {hint}", status=507, headers=headers)


def _content_range(raw: str) -> tuple[int, int] | None:
    """Inclusive (start, end) of a chunk's `Content-Range`, or None when malformed (numbers
    beyond 64 bits included: no upload is that large)."""
    match = _CONTENT_RANGE.match(raw.strip())
    if match is None:
        return None
    try:
        start, end = (parse_int(match.group(i), "Content-Range") for i in (1, 2))
    except InputError:
        return None
    return (start, end) if end >= start else None


def _range_error(ctx: Ctx, size: int, message: str) -> RegistryError:
    return RegistryError(
        "BLOB_UPLOAD_INVALID",
        message,
        status=416,
        headers={k: v for k, v in _session_headers(ctx.repo, ctx.arg, size).items()},
    )


async def _body(ctx: Ctx) -> AsyncIterator[bytes]:
    async for chunk in ctx.request.stream():
        if chunk:
            yield chunk


async def _append(
    ctx: Ctx,
    upload_id: str,
    size: int,
    owner: str,
    *,
    tracked: bool = True,
    final: Digest | None = None,
) -> int:
    """Stage the request body as the next chunk of `owner`'s upload (`tracked`: a session
    with a row, whose staged bytes count against the identity's cap; `final`: the digest
    the upload is committed as right after, see `BlobStore.append_upload`)."""
    offset, length = _declared_chunk(ctx, size)
    registry = ctx.registry
    store = registry.blobs
    cap = registry.upload_max_staged_bytes_per_user
    try:
        limit = await ctx.run(
            registry.meta.reserve_upload_bytes,
            upload_id if tracked else None,
            owner,
            offset,
            length,
            cap,
        )
    except UploadLimitReached as exc:
        raise _limit_reached(exc) from None
    try:
        new_size = await store.append_upload(
            upload_id, offset, _body(ctx), limit=limit, final=final
        )
    except BaseException as exc:
        if tracked and cap > 0:  # give back the room reserved but not used
            with contextlib.suppress(Exception):
                kept = await store.upload_size(upload_id)
                await ctx.run(registry.meta.settle_upload, upload_id, kept)
        if isinstance(exc, st.StorageFull):
            staged = await store.upload_size(upload_id) if tracked else None
            raise _storage_full(ctx, exc, staged) from None
        if isinstance(exc, st.UploadOffsetMismatch):
            raise _range_error(ctx, exc.size, str(exc)) from None
        if isinstance(exc, st.UploadTooLarge):
            if length is None:  # the limit was the identity's room, not the request's own
                raise _limit_reached(
                    UploadLimitReached(
                        f"{owner}'s staged uploads would pass the limit of {cap} bytes "
                        "(upload_max_staged_bytes_per_user); the chunk was not kept"
                    )
                ) from None
            raise RegistryError(
                "SIZE_INVALID", "request body is longer than its Content-Length/Content-Range"
            ) from None
        raise
    if length is not None and new_size - offset != length:
        raise RegistryError(
            "SIZE_INVALID",
            f"received {new_size - offset} bytes but the request declared {length}",
        )
    return new_size


async def patch_upload(ctx: Ctx) -> Response:
    session = await _session(ctx)
    upload_id = session.id
    size = await ctx.registry.blobs.upload_size(upload_id)
    new_size = await _append(ctx, upload_id, size, session.owner)
    await ctx.run(ctx.registry.meta.touch_upload, upload_id, ctx.registry.now(), new_size)
    return Response(status_code=202, headers=_session_headers(ctx.repo, upload_id, new_size))


async def put_upload(ctx: Ctx) -> Response:
    session = await _session(ctx)
    upload_id = session.id
    digest = _query_digest(ctx)
    if digest is None:
        raise RegistryError("DIGEST_INVALID", "the digest query parameter is required")
    headers = ctx.request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if has_body or "content-range" in headers:
        size = await ctx.registry.blobs.upload_size(upload_id)
        # The whole blob in this one request: the store may write it where it belongs.
        whole = size == 0 and "content-range" not in headers
        await _append(ctx, upload_id, size, session.owner, final=digest if whole else None)
    return await _complete(ctx, ctx.user, upload_id, digest, ctx.may_create_namespace, tracked=True)


async def _complete(
    ctx: Ctx, user: UserInfo, upload_id: str, digest: Digest, create_ns: bool, *, tracked: bool
) -> Response:
    registry = ctx.registry
    # A blob marked corrupt is replaced by this upload (the store replaces one of another
    # size by itself); the metadata then marks it present again.
    repair = await _state_after_any_sweep(ctx, digest) == CORRUPT
    try:
        info = await registry.blobs.commit_upload(upload_id, digest, replace=repair)
    except (st.DigestMismatch, st.SizeMismatch):
        if tracked:  # the store discarded the staged data: the session is over
            await ctx.run(registry.meta.delete_upload, upload_id)
        raise
    except st.StorageFull as exc:  # the staged data stays: the PUT can be retried
        staged = await registry.blobs.upload_size(upload_id) if tracked else None
        raise _storage_full(ctx, exc, staged) from None
    notifier = registry.notifier
    await notify.settle_pulls(notifier)
    emit = notify.blob_pushed(notifier, ctx.request.scope, user, ctx.repo, str(digest), info.size)
    try:
        await ctx.run(
            registry.meta.record_blob,
            ctx.repo,
            str(digest),
            info.size,
            registry.now(),
            create_ns,
            repaired=repair,
            emit=emit,
        )
    finally:
        if tracked:
            await ctx.run(registry.meta.delete_upload, upload_id)
    if notifier is not None:
        notifier.committed()
    return _blob_created(ctx.repo, digest)


async def _state_after_any_sweep(ctx: Ctx, digest: Digest) -> str | None:
    """The blob row's state once no GC sweep holds it (or after `SWEEP_WAIT_SECONDS`,
    when the commit goes ahead and `record_blob` refuses it as before: `BLOB_UNKNOWN`)."""
    deadline = time.monotonic() + SWEEP_WAIT_SECONDS
    while True:
        state = await ctx.run(ctx.registry.meta.blob_state, str(digest))
        if state != DELETING or time.monotonic() >= deadline:
            return state
        await asyncio.sleep(SWEEP_POLL_SECONDS)


async def upload_status(ctx: Ctx) -> Response:
    upload_id = (await _session(ctx)).id
    size = await ctx.registry.blobs.upload_size(upload_id)
    return Response(status_code=204, headers=_session_headers(ctx.repo, upload_id, size))


async def cancel_upload(ctx: Ctx) -> Response:
    upload_id = (await _session(ctx)).id
    # Staged data already gone still ends the session.
    with contextlib.suppress(st.UploadNotFound):
        await ctx.registry.blobs.cancel_upload(upload_id)
    await ctx.run(ctx.registry.meta.delete_upload, upload_id)
    return Response(status_code=204, headers={"Content-Length": "0"})
