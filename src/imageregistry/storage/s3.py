"""The ``s3`` storage driver: blobs in an S3-compatible bucket, through ``obstore``.

``obstore`` (Rust ``object_store``) was chosen after measuring it against ``aiobotocore``
(docs/benchmarks.md, "S3 client library"). Layout under ``s3://BUCKET/PREFIX``:

- ``blobs/<alg>/<2 hex>/<hex>``: committed, verified blobs (content-addressed).
- ``uploads/<id>/started``: an empty marker; the session exists while it does.
- ``uploads/<id>/data/<offset, 20 digits>``: one *segment* per append, holding the bytes
  appended at that offset. Each append streams into its segment with a multipart upload
  of ``part_size`` parts, one part in flight, so memory per upload stays bounded whatever
  the blob size. A failed or oversized append aborts its multipart upload: nothing of it
  is staged, and ``upload_size`` (the sum of the segments) says exactly what is.
- ``uploads/<id>/digests/<end, 20 digits>``: the sha256 and sha512 of bytes ``[0, end)``,
  written after an append by the process that hashed every byte from 0 to ``end``.
- ``uploads/<id>/written/<end, 20 digits>``: a monolithic push (an append at offset 0
  announced as the whole blob, ``final``) streams straight to its blob key instead of a
  segment, and its multipart upload completes only when the bytes hash to the announced
  digest; this record keeps the digest of what arrived and whether it was published, so
  the commit needs no copy (the copy from a staging key costs a full read and write of
  the blob inside Swift, Ceph RGW or MinIO; docs/benchmarks.md, "Data plane on object
  storage versus CNCF distribution").

All upload state lives in the bucket, so a chunked upload may continue on another
replica. Hash state cannot be persisted (Python's hashlib cannot export it), so commit
uses the ``digests`` record when the segments end exactly at a recorded ``end`` (the
usual single-process push) and otherwise **re-reads the staged bytes** to hash them
(a chunked upload that moved between processes). Publishing copies a single segment
server-side (``CopyObject``) after the digest is known to match; several segments (or
one larger than 5 GiB, CopyObject's limit) are streamed into the blob key with a
multipart upload whose last step, completion, is never sent when the digest does not
match. A mismatch therefore publishes nothing and the session's keys are deleted.

An append, a commit or a cancel holds the session: within the process (a set of busy
ids) and, given ``session_locks`` (the server passes the database's, see
``metadata/upload_locks.py``), across every process sharing the bucket. A second request
for a held session is refused with ``UploadInProgress`` before it touches the bucket:
without that, two replicas would both stage a chunk at the same offset, one chunk would
silently replace the other and a digest hashed by one process could be taken for bytes
another wrote (docs/architecture.md#built-for-several-replicas).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from imageregistry.content.digest import Digest
from imageregistry.storage.driver import (
    BlobInfo,
    PendingWrite,
    RelayMethod,
    RelaySource,
    SessionLocks,
    StoredBlob,
    StoredUpload,
    blob_key,
    read_stop,
)
from imageregistry.storage.driver import validate_upload_id as _valid
from imageregistry.storage.errors import (
    BlobNotFound,
    ConfigurationError,
    DigestMismatch,
    SizeMismatch,
    StorageUnavailable,
    UploadExists,
    UploadInProgress,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from imageregistry.storage.presigned import Upstream, UpstreamFailed, open_upstream, read_into
from imageregistry.storage.s3config import S3Settings
from imageregistry.storage.s3multipart import MultipartUploads

if TYPE_CHECKING:
    from obstore import GetResult
    from obstore.store import ClientConfig, S3Config

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")

_ALGORITHMS = ("sha256", "sha512")
_HEX_LEN = {"sha256": 64, "sha512": 128}
_COPY_LIMIT = 5 << 30  # CopyObject's maximum source size
# CopyObject answers only once the store has moved the whole blob (about 40 s for 2 GiB on
# Swift under load), so a copy's timeout is `timeout_seconds` plus one second per this many
# bytes, in whole minutes: a stalled store still answers 503 in bounded time.
_COPY_BYTES_PER_SECOND = 16 << 20
_MAX_HASHERS = 10_000  # in-process hash states kept (abandoned uploads must not pile up)
_READ_CHUNK = 1 << 20
_RELAY_EXPIRY = timedelta(minutes=1)  # a relay's presigned request is made at once
# A pull's bytes arrive in pieces of up to this much (`_socket_pieces`): at 1 GiB from moto
# 4 MiB pieces streamed about 4 % faster than 1 MiB ones (docs/benchmarks.md); a pull in
# flight holds about three pieces (the read buffer, the piece, Granian's copy of it).
_SOCKET_CHUNK = 4 << 20
_NOT_FOUND = (NotFoundError, FileNotFoundError)  # obstore raises either, by version
_BLOB_KEY = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]{2})/([0-9a-f]+)")
_UPLOAD_KEY = re.compile(
    r"uploads/([A-Za-z0-9-]{1,64})/(started|data/\d{20}|digests/\d{20}|written/\d{20})"
)


def _unavailable(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Turn a failing object store (unreachable, 5xx after the client's retries) into
    ``StorageUnavailable`` and one log line naming the operation; "not found" answers and
    the caller's own stream errors pass through unchanged."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except _NOT_FOUND:
            raise
        except BaseError as exc:
            store = args[0]
            where = store.settings.where if isinstance(store, S3BlobStore) else "s3"
            raise _store_failed(where, method.__name__, _describe(exc)) from None

    return guarded


def _store_failed(where: str, operation: str, detail: str) -> StorageUnavailable:
    """The one log line and error for a store that failed during `operation`."""
    log.warning("object store %s failed during %s: %s", where, operation, detail)
    return StorageUnavailable(operation, detail)


class S3StartupError(ConfigurationError):
    """The bucket cannot be used (missing, refused credentials, unreachable)."""


def build_store(settings: S3Settings, *, timeout_seconds: int | None = None) -> S3Store:
    """The obstore client for ``settings`` (no network traffic); ``timeout_seconds``
    overrides the per-request timeout (a server-side copy's)."""
    config: S3Config = {
        "region": settings.region,
        "virtual_hosted_style_request": not settings.path_style,
    }
    if settings.endpoint:
        config["endpoint"] = settings.endpoint
    if settings.access_key_id:
        config["access_key_id"] = settings.access_key_id
        config["secret_access_key"] = settings.secret_access_key
        if settings.session_token:
            config["session_token"] = settings.session_token
    if settings.sse:
        config["server_side_encryption"] = settings.sse
        if settings.sse_kms_key_id:
            config["sse_kms_key_id"] = settings.sse_kms_key_id
    client: ClientConfig = {
        "allow_http": settings.endpoint.startswith("http://"),
        "allow_invalid_certificates": not settings.tls_verify,
    }
    if settings.ca_bundle:
        try:
            with open(settings.ca_bundle, "rb") as handle:
                client["root_certificate"] = handle.read()
        except OSError as exc:
            raise ConfigurationError(
                f"storage_s3.ca_bundle {settings.ca_bundle}: {exc.strerror}"
            ) from None
    client["connect_timeout"] = timedelta(seconds=min(5, settings.timeout_seconds))
    client["timeout"] = timedelta(seconds=timeout_seconds or settings.timeout_seconds)
    # A few retries within 15 s, not the library's default of 10 over 3 minutes: a client
    # waiting on an unreachable store gets its 503 and Retry-After in seconds.
    return S3Store(
        settings.bucket,
        prefix=settings.prefix or None,
        config=config,
        client_options=client,
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=15)},
    )


async def create_bucket_async(settings: S3Settings) -> None:
    """Create the bucket with a SigV4-presigned ``PUT /bucket/`` (CreateBucket).

    obstore has no bucket API; a presigned PUT on the empty key is CreateBucket.
    "Already owned by you" counts as success.
    """
    import httpx

    bare = build_store(
        S3Settings(**{**settings.__dict__, "prefix": ""})  # the bucket's own URL
    )
    url = await obstore.sign_async(bare, "PUT", "", timedelta(minutes=5))
    verify: bool | str = settings.ca_bundle or settings.tls_verify
    async with httpx.AsyncClient(verify=verify, timeout=60) as client:
        response = await client.put(url)
    if response.status_code >= 300 and "BucketAlreadyOwnedByYou" not in response.text:
        code = re.search(r"<Code>([^<]+)</Code>", response.text)
        raise S3StartupError(
            f"cannot create bucket {settings.bucket!r}: HTTP {response.status_code}"
            f" {code.group(1) if code else ''}".rstrip()
        )


def _describe(exc: Exception) -> str:
    text = str(exc)
    for code in (
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AuthorizationHeaderMalformed",
    ):
        if code in text:
            return code
    if "kind: Timeout" in text or "TimedOut" in text:
        return "timed out (storage_s3.timeout_seconds)"
    if "error sending request" in text or "Connection refused" in text:
        return "endpoint unreachable"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


@dataclass
class _Hashers:
    """Hashes of bytes ``[0, end)`` of one upload, kept by the process that saw them."""

    end: int
    hashers: dict[str, Any]

    @classmethod
    def fresh(cls) -> _Hashers:
        return cls(0, {alg: hashlib.new(alg) for alg in _ALGORITHMS})


class S3BlobStore:
    """``BlobStore`` over one S3 bucket/prefix (see the module docstring)."""

    relays = True  # the blob port may fetch a blob's presigned URL and pass it on

    def __init__(self, settings: S3Settings, session_locks: SessionLocks | None = None) -> None:
        self.settings = settings
        self._session_locks = session_locks
        self._store = build_store(settings)
        self._copiers: dict[int, S3Store] = {}  # by timeout: a few, in whole minutes
        self._busy: set[str] = set()
        self._hashers: dict[str, _Hashers] = {}
        self._multipart = MultipartUploads(settings)

    def __repr__(self) -> str:
        return f"S3BlobStore({self.settings.where})"

    # -- start-up check ---------------------------------------------------------------

    async def check(self) -> None:
        """List the prefix once: refuses a missing bucket or bad credentials clearly.

        With ``create_bucket`` a missing bucket is created first.
        """
        try:
            await self._store.list_with_delimiter_async("uploads/")
            return
        except Exception as exc:
            problem = _describe(exc)
            if not (problem == "NoSuchBucket" and self.settings.create_bucket):
                raise S3StartupError(
                    f"storage {self.settings.where}: bucket {self.settings.bucket!r} failed the"
                    f" start-up check (list objects): {problem}"
                ) from None
        await create_bucket_async(self.settings)
        await self.check()

    # -- keys -------------------------------------------------------------------------

    @staticmethod
    def _dir(upload_id: str) -> str:
        return f"uploads/{_valid(upload_id)}/"

    async def _segments(self, upload_id: str) -> tuple[list[tuple[int, int, str]], list[str]]:
        """(offset, size, key) of each data segment in order, and every key of the session.

        ``UploadNotFound`` when the session marker is absent.
        """
        prefix = self._dir(upload_id)
        metas = await obstore.list(self._store, prefix).collect_async()
        keys = [meta["path"] for meta in metas]
        if prefix + "started" not in keys:
            raise UploadNotFound(upload_id)
        segments = sorted(
            (int(meta["path"].rsplit("/", 1)[1]), int(meta["size"]), meta["path"])
            for meta in metas
            if meta["path"].startswith(prefix + "data/")
        )
        return segments, keys

    @staticmethod
    def _staged(segments: list[tuple[int, int, str]]) -> int:
        """Bytes staged: the contiguous run of segments from offset 0."""
        end = 0
        for offset, size, _ in segments:
            if offset != end:
                break
            end += size
        return end

    async def _head_size(self, key: str) -> int | None:
        try:
            meta = await obstore.head_async(self._store, key)
        except _NOT_FOUND:
            return None
        return int(meta["size"])

    async def _delete_keys(self, keys: list[str]) -> None:
        """Delete ``keys`` (absent ones are fine): obstore sends one ``DeleteObjects`` per
        1,000 keys, with the ``Content-MD5`` header Swift and older RGW/MinIO require."""
        if len(keys) == 1:
            await obstore.delete_async(self._store, keys[0])
        elif keys:
            await obstore.delete_async(self._store, keys)

    async def _put_stream(self, key: str, stream: AsyncIterator[bytes]) -> None:
        """Stream into ``key`` as a multipart upload, one part in flight.

        An exception raised by ``stream`` (a client gone, a limit, a digest mismatch)
        aborts the upload, so nothing appears at ``key``; it is re-raised as itself
        rather than as the client library's wrapper.

        A stream that ends within its first part is sent as one ``PutObject`` instead
        (one request, not three): most layers and configs are small, and a push's time
        between its first blob and its manifest is what a GC with a short grace races.
        Either way at most one part is held in memory.
        """
        attributes: dict[str, str] = {}
        if self.settings.storage_class:
            attributes["Storage-Class"] = self.settings.storage_class
        pieces = aiter(stream)
        first: list[bytes] = []
        buffered = 0
        async for piece in pieces:  # an exception here has written nothing yet
            first.append(piece)
            buffered += len(piece)
            if buffered >= self.settings.part_size:
                break
        else:
            await obstore.put_async(
                self._store, key, b"".join(first), attributes=attributes or None
            )
            return
        failure: BaseException | None = None

        async def watched() -> AsyncIterator[bytes]:
            nonlocal failure
            try:
                while first:
                    yield first.pop(0)  # handed over: the library holds the part now
                async for piece in pieces:
                    yield piece
            except BaseException as exc:
                failure = exc
                raise

        try:
            await obstore.put_async(
                self._store,
                key,
                watched(),
                attributes=attributes or None,
                chunk_size=self.settings.part_size,
                max_concurrency=1,
            )
        except _NOT_FOUND:
            if failure is not None:
                raise failure from None
            # The multipart upload vanished under us: aborted by another party (a bucket
            # lifecycle rule, a cleanup that misjudged it). Nothing was written; retryable.
            raise StorageUnavailable("put", "the multipart upload was aborted") from None
        except Exception:
            if failure is not None:
                raise failure from None
            raise

    @contextlib.asynccontextmanager
    async def _held(self, upload_id: str) -> AsyncIterator[None]:
        """Hold the session for one append, commit or cancel (see the module docstring)."""
        if upload_id in self._busy:
            raise UploadInProgress(upload_id)
        self._busy.add(upload_id)
        try:
            if self._session_locks is None:
                yield
                return
            # Shielded: a lock taken by the thread must always be given back, even when
            # the request is cancelled while it waits for the thread.
            with anyio.CancelScope(shield=True):
                release = await anyio.to_thread.run_sync(self._session_locks, upload_id)
            if release is None:
                raise UploadInProgress(upload_id)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(release)
        finally:
            self._busy.discard(upload_id)

    # -- uploads ----------------------------------------------------------------------

    @_unavailable
    async def start_upload(self, upload_id: str) -> None:
        marker = self._dir(upload_id) + "started"
        if await self._head_size(marker) is not None:
            raise UploadExists(upload_id)
        await obstore.put_async(self._store, marker, b"")

    @_unavailable
    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
        limit: int | None = None,
        *,
        final: Digest | None = None,
    ) -> int:
        prefix = self._dir(upload_id)
        async with self._held(upload_id):
            segments, keys = await self._segments(upload_id)
            staged = _written_end(prefix, keys) or self._staged(segments)
            if offset != staged:
                raise UploadOffsetMismatch(upload_id, offset, staged)
            if final is not None and offset == 0:
                self._hashers.pop(upload_id, None)
                return await self._append_final(upload_id, chunks, limit, final)
            known = self._hashers.pop(upload_id, None)
            if offset == 0:
                known = _Hashers.fresh()
            elif known is not None and known.end != offset:
                known = None  # another process appended since: our hash state is stale
            hashers = None if known is None else {a: h.copy() for a, h in known.hashers.items()}
            meter = _Meter(upload_id, limit, [] if hashers is None else list(hashers.values()))
            # A stream that fails part-way aborts the segment's multipart upload, so
            # nothing of this append is staged (the contract allows keeping a prefix).
            await self._put_stream(f"{prefix}data/{offset:020d}", meter.stream(chunks))
            end = offset + meter.written
            if hashers is not None:
                record = "\n".join(f"{alg} {h.hexdigest()}" for alg, h in hashers.items())
                await obstore.put_async(self._store, f"{prefix}digests/{end:020d}", record.encode())
                self._hashers[upload_id] = _Hashers(end, hashers)
                while len(self._hashers) > _MAX_HASHERS:  # oldest first: commit re-reads
                    del self._hashers[next(iter(self._hashers))]
            return end

    async def _append_final(
        self, upload_id: str, chunks: AsyncIterator[bytes], limit: int | None, final: Digest
    ) -> int:
        """The whole blob in one append: stream it to its content-addressed key, where the
        multipart upload completes only when the bytes hash to ``final``.

        This saves the commit's copy from a staging key (on Swift, Ceph or MinIO a full
        read and write of the blob inside the store). What was written is recorded as
        ``written/<end>`` with the digest of the bytes, so ``commit_upload`` (here or on
        another replica) reports a mismatch without re-reading anything.
        """
        hasher = hashlib.new(final.algorithm)
        meter = _Meter(upload_id, limit, [hasher])

        async def verified() -> AsyncIterator[bytes]:
            async for chunk in meter.stream(chunks):
                yield chunk
            if hasher.hexdigest() != final.hex:
                raise _NotFinal  # aborts the multipart upload: nothing is published

        published = True
        try:
            await self._put_stream(blob_key(final), verified())
        except _NotFinal:
            published = False
        actual = Digest(final.algorithm, hasher.hexdigest())
        record = f"{actual}\n{'published' if published else 'discarded'}\n"
        await obstore.put_async(
            self._store, f"{self._dir(upload_id)}written/{meter.written:020d}", record.encode()
        )
        return meter.written

    async def _commit_written(
        self, upload_id: str, key: str, expected: Digest, expected_size: int | None
    ) -> int:
        """Settle a session whose one append went straight to a blob key."""
        size = int(key.rsplit("/", 1)[1])
        result = await obstore.get_async(self._store, key)
        actual_text, state = bytes(await result.bytes_async()).decode().split()
        actual = Digest.parse(actual_text)
        if actual != expected:
            raise DigestMismatch(expected, actual)
        if expected_size is not None and size != expected_size:
            raise SizeMismatch(expected_size, size)
        # The key was written before the caller waited out any GC sweep of this digest:
        # make sure the blob is still there (a sweep may have deleted the old copy after).
        if state != "published" or await self._head_size(blob_key(expected)) != size:
            raise StorageUnavailable("commit_upload", "the blob written by this upload is gone")
        return size

    @_unavailable
    async def upload_size(self, upload_id: str) -> int:
        segments, keys = await self._segments(upload_id)
        return _written_end(self._dir(upload_id), keys) or self._staged(segments)

    async def _recorded_digest(self, upload_id: str, end: int, algorithm: str) -> str | None:
        try:
            result = await obstore.get_async(
                self._store, f"{self._dir(upload_id)}digests/{end:020d}"
            )
        except _NOT_FOUND:
            return None
        for line in bytes(await result.bytes_async()).decode().splitlines():
            alg, _, hexdigest = line.partition(" ")
            if alg == algorithm:
                return hexdigest
        return None

    async def _read_segments(
        self, segments: list[tuple[int, int, str]], hasher: Any
    ) -> AsyncIterator[bytes]:
        for _, size, key in segments:
            if size == 0:
                continue
            result = await obstore.get_async(self._store, key)
            async for piece in result.stream(min_chunk_size=_READ_CHUNK):
                data = bytes(piece)
                hasher.update(data)
                yield data

    @_unavailable
    async def commit_upload(
        self,
        upload_id: str,
        expected: Digest,
        expected_size: int | None = None,
        *,
        replace: bool = False,
    ) -> BlobInfo:
        async with self._held(upload_id):
            segments, keys = await self._segments(upload_id)
            written = [k for k in keys if k.startswith(self._dir(upload_id) + "written/")]
            if written:
                try:
                    size = await self._commit_written(
                        upload_id, written[0], expected, expected_size
                    )
                finally:
                    self._hashers.pop(upload_id, None)
                    await self._delete_keys(keys)
                return BlobInfo(expected, size)
            size = self._staged(segments)
            # Only the contiguous run from offset 0 is the upload (a gap cannot arise from
            # this driver's appends, but a stray object must never be concatenated in).
            segments = [s for s in segments if s[1] > 0 and s[0] + s[1] <= size]
            known = self._hashers.pop(upload_id, None)
            # This process hashed every staged byte: no need to read its record back.
            seen = (
                known.hashers[expected.algorithm].hexdigest()
                if known is not None and known.end == size and expected.algorithm in known.hashers
                else None
            )
            try:
                if expected_size is not None and size != expected_size:
                    raise SizeMismatch(expected_size, size)
                await self._publish(upload_id, segments, size, expected, replace, seen)
            finally:
                await self._delete_keys(keys)
            return BlobInfo(expected, size)

    async def _publish(
        self,
        upload_id: str,
        segments: list[tuple[int, int, str]],
        size: int,
        expected: Digest,
        replace: bool,
        seen: str | None = None,
    ) -> None:
        key = blob_key(expected)
        recorded = seen or await self._recorded_digest(upload_id, size, expected.algorithm)
        stored = await self._head_size(key)
        keep_stored = stored == size and not replace
        if recorded is None and (keep_stored or (len(segments) < 2 and size <= _COPY_LIMIT)):
            hasher = hashlib.new(expected.algorithm)
            async for _ in self._read_segments(segments, hasher):
                pass
            recorded = hasher.hexdigest()
        if recorded is not None:
            if recorded != expected.hex:
                raise DigestMismatch(expected, Digest(expected.algorithm, recorded))
            if keep_stored:
                return
            if not segments:
                await obstore.put_async(self._store, key, b"")
                return
            if len(segments) == 1 and size <= _COPY_LIMIT:
                await obstore.copy_async(self._copier(size), segments[0][2], key)
                return
        # Several segments: concatenate by streaming; completion is withheld on mismatch.
        hasher = hashlib.new(expected.algorithm)

        async def verified() -> AsyncIterator[bytes]:
            async for piece in self._read_segments(segments, hasher):
                yield piece
            if hasher.hexdigest() != expected.hex:
                raise DigestMismatch(expected, Digest(expected.algorithm, hasher.hexdigest()))

        await self._put_stream(key, verified())

    def _copier(self, size: int) -> S3Store:
        """The client for a server-side copy of ``size`` bytes (see ``_COPY_BYTES_PER_SECOND``)."""
        extra = -(-size // _COPY_BYTES_PER_SECOND)
        seconds = self.settings.timeout_seconds + 60 * -(-extra // 60)
        store = self._copiers.get(seconds)
        if store is None:
            store = self._copiers[seconds] = build_store(self.settings, timeout_seconds=seconds)
        return store

    @_unavailable
    async def cancel_upload(self, upload_id: str) -> None:
        async with self._held(upload_id):
            _, keys = await self._segments(upload_id)
            self._hashers.pop(upload_id, None)
            await self._delete_keys(keys)

    # -- blobs ------------------------------------------------------------------------

    @_unavailable
    async def put_blob(self, data: bytes, expected: Digest, *, replace: bool = False) -> BlobInfo:
        actual = hashlib.new(expected.algorithm, data).hexdigest()
        if actual != expected.hex:
            raise DigestMismatch(expected, Digest(expected.algorithm, actual))
        key = blob_key(expected)
        if replace or await self._head_size(key) != len(data):
            await obstore.put_async(self._store, key, data)
        return BlobInfo(expected, len(data))

    async def hash_blob(self, digest: Digest) -> BlobInfo:
        hasher = hashlib.new(digest.algorithm)
        size = 0
        async for piece in await self.read(digest):
            hasher.update(piece)
            size += len(piece)
        return BlobInfo(Digest(digest.algorithm, hasher.hexdigest()), size)

    @_unavailable
    async def stat(self, digest: Digest) -> int | None:
        return await self._head_size(blob_key(digest))

    def local_path(self, digest: Digest) -> str | None:
        return None

    @_unavailable
    async def redirect_url(self, digest: Digest) -> str | None:
        """A presigned GET of the blob (``redirect: false`` turns this off); signing asks
        nothing of the store."""
        if not self.settings.redirect:
            return None
        expiry = timedelta(seconds=self.settings.presign_expiry_seconds)
        return await obstore.sign_async(self._store, "GET", blob_key(digest), expiry)

    @_unavailable
    async def relay_source(self, digest: Digest, method: RelayMethod = "GET") -> RelaySource:
        key = blob_key(digest)
        url = await obstore.sign_async(self._store, method, key, _RELAY_EXPIRY)
        return RelaySource(url, self._relay_tls if url.startswith("https://") else None)

    @functools.cached_property
    def _relay_tls(self) -> ssl.SSLContext:
        """TLS to the store for presigned requests made on our own sockets: the settings'
        CA bundle (else the system's), unverified only when ``tls_verify: false`` says so.
        Made on first use: loading CAs is no work for a store that never needs it."""
        context = ssl.create_default_context(cafile=self.settings.ca_bundle or None)
        if not self.settings.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @_unavailable
    async def read(
        self,
        digest: Digest,
        start: int = 0,
        end: int | None = None,
        *,
        expected_size: int | None = None,
    ) -> AsyncIterator[bytes]:
        """With ``expected_size`` (a client's pull) one GET of the blob's presigned URL on a
        socket of our own (`presigned.py`), whose answer also gives the stored size to check;
        otherwise (registry verify, GC) a HEAD for the size, then obstore's ranged GET."""
        key = blob_key(digest)
        recorded_span = expected_size is not None and (
            0 <= start < (expected_size if end is None else end) <= expected_size
        )
        if recorded_span and expected_size is not None:  # a pull of a non-empty span
            return await self._read_presigned(digest, start, end, expected_size)
        stop = read_stop(digest, await self._head_size(key), start, end, expected_size)
        if start == stop:
            return _empty()
        try:
            result = await obstore.get_async(self._store, key, options={"range": (start, stop)})
        except _NOT_FOUND:
            raise BlobNotFound(digest) from None
        return _pieces(result)

    async def _read_presigned(
        self, digest: Digest, start: int, end: int | None, expected_size: int
    ) -> AsyncIterator[bytes]:
        """A pull of a non-empty span of the recorded size (see `read`)."""
        stop = expected_size if end is None else end
        span = None if start == 0 and end is None else (start, stop - 1)
        source = await self.relay_source(digest)
        upstream = await self._in_reader_thread(
            open_upstream, source, "GET", span, self.settings.timeout_seconds
        )
        try:
            if upstream.status == 404:
                raise BlobNotFound(digest)
            if upstream.status == 416:  # shorter than recorded: say how long it is
                read_stop(
                    digest, await self._head_size(blob_key(digest)), start, end, expected_size
                )
            stored = upstream.object_size()
            if upstream.status != (200 if span is None else 206) or stored is None:
                raise self._failed("read", f"it answered HTTP {upstream.status}")
            read_stop(digest, stored, start, end, expected_size)
        except BaseException:
            upstream.close()
            raise
        return self._socket_pieces(upstream, stop - start)

    async def _socket_pieces(self, upstream: Upstream, count: int) -> AsyncIterator[bytes]:
        """The answer's `count` body bytes as `bytes` of up to `_SOCKET_CHUNK` (each read
        into one reused buffer in a reader thread, then copied out once)."""
        buffer = bytearray(min(_SOCKET_CHUNK, count))
        try:
            left = count
            while left > 0:
                want = min(len(buffer), left)
                got = await self._in_reader_thread(read_into, upstream, buffer, want)
                if got == 0:
                    raise self._failed("read", f"its answer ended {left} bytes early")
                left -= got
                yield bytes(memoryview(buffer)[:got])
        finally:
            upstream.close()

    async def _in_reader_thread(self, call: Callable[..., _T], *args: Any) -> _T:
        """`call(*args)` in a worker thread (each holds one only while it reads); a store
        that fails or cannot be reached (`UpstreamFailed`) is `StorageUnavailable`, logged."""
        try:
            return await anyio.to_thread.run_sync(call, *args)
        except UpstreamFailed as exc:
            raise self._failed("read", str(exc)) from None

    def _failed(self, operation: str, detail: str) -> StorageUnavailable:
        return _store_failed(self.settings.where, operation, detail)

    @_unavailable
    async def read_all(self, digest: Digest) -> bytes:
        try:
            result = await obstore.get_async(self._store, blob_key(digest))
        except _NOT_FOUND:
            raise BlobNotFound(digest) from None
        return bytes(await result.bytes_async())

    @_unavailable
    async def delete(self, digest: Digest) -> bool:
        key = blob_key(digest)
        if await self._head_size(key) is None:
            return False
        await obstore.delete_async(self._store, key)
        return True

    @_unavailable
    async def delete_many(self, digests: Sequence[Digest]) -> None:
        await self._delete_keys([blob_key(digest) for digest in digests])

    async def iter_blobs(self) -> AsyncIterator[StoredBlob]:
        # ListObjectsV2, page by page (1,000 keys each), as the caller consumes them.
        async for batch in obstore.list(self._store, "blobs/"):
            for meta in batch:
                match = _BLOB_KEY.fullmatch(meta["path"])
                if match is None:
                    continue
                algorithm, head, hexdigest = match.groups()
                if len(hexdigest) != _HEX_LEN[algorithm] or not hexdigest.startswith(head):
                    continue
                yield StoredBlob(
                    Digest(algorithm, hexdigest), int(meta["size"]), _utc(meta["last_modified"])
                )

    async def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        found: dict[str, list[tuple[int, int]]] = {}
        modified: dict[str, datetime] = {}
        started: set[str] = set()
        async for batch in obstore.list(self._store, "uploads/"):
            for meta in batch:
                match = _UPLOAD_KEY.fullmatch(meta["path"])
                if match is None:
                    continue
                upload_id, rest = match.groups()
                when = _utc(meta["last_modified"])
                modified[upload_id] = max(modified.get(upload_id, when), when)
                if rest == "started":
                    started.add(upload_id)
                elif rest.startswith("written/"):  # a whole blob, written at offset 0
                    found.setdefault(upload_id, []).append((0, int(rest.split("/")[1])))
                elif rest.startswith("data/"):
                    found.setdefault(upload_id, []).append(
                        (int(rest.split("/")[1]), int(meta["size"]))
                    )
        for upload_id in sorted(started):
            segments = [(o, s, "") for o, s in sorted(found.get(upload_id, []))]
            yield StoredUpload(upload_id, self._staged(segments), modified[upload_id])

    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        return self._multipart.pending()

    async def abort_pending_write(self, write: PendingWrite) -> None:
        await self._multipart.abort(write)


class _Meter:
    """Counts an append's bytes against the upload's size limit and feeds its hashers, as
    the bytes stream through to the store."""

    def __init__(self, upload_id: str, limit: int | None, hashers: list[Any]) -> None:
        self.upload_id, self.limit, self.hashers = upload_id, limit, hashers
        self.written = 0

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if not chunk:
                continue
            self.written += len(chunk)
            if self.limit is not None and self.written > self.limit:
                raise UploadTooLarge(self.upload_id, self.limit)
            for hasher in self.hashers:
                hasher.update(chunk)
            yield chunk


class _NotFinal(Exception):
    """The bytes of a ``final`` append do not hash to the announced digest."""


def _written_end(prefix: str, keys: list[str]) -> int:
    """The size recorded by a ``final`` append (``written/<end>``), 0 when there is none."""
    ends = [int(k.rsplit("/", 1)[1]) for k in keys if k.startswith(prefix + "written/")]
    return max(ends, default=0)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _pieces(result: GetResult) -> AsyncIterator[bytes]:
    async for piece in result.stream(min_chunk_size=_READ_CHUNK):
        yield bytes(piece)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator
