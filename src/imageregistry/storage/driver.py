"""The blob store protocol every storage driver implements, and the values it exchanges.

The protocol is deliberately narrow and shaped so an S3-compatible driver fits beside the
filesystem one (docs/architecture.md#built-for-several-replicas): nothing assumes
an atomic rename (``commit_upload`` may complete a multipart upload or copy then delete),
appends of any size are accepted (a remote driver buffers to its 5 MiB minimum part size),
an upload's state (its id and staged size) is always reconstructible from the store itself
so a session may continue on another replica, and a GET may be answered with a redirect
(``redirect_url``) instead of bytes. Blobs are content-addressed under
``blobs/<algorithm>/<first two hex>/<hex>``; uploads are staged elsewhere so a partial
upload can never be mistaken for a blob.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from imageregistry.content.digest import Digest
from imageregistry.storage.errors import (
    BlobNotFound,
    InvalidRange,
    InvalidUploadId,
    StoredSizeDiffers,
)

_UPLOAD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A committed blob."""

    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob found by walking the store (for the storage reconciler)."""

    digest: Digest
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """An upload session found by walking the store (for abandoned-upload cleanup)."""

    upload_id: str
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """An unfinished multipart upload in an object store: a process died (or its abort
    failed) while streaming an object. Its parts are stored, and billed, until aborted."""

    key: str  # the object key it was writing, relative to the store's prefix
    upload_id: str  # the object store's multipart upload id
    initiated: datetime


def validate_upload_id(upload_id: str) -> str:
    """Return ``upload_id`` if it is ``[A-Za-z0-9-]{1,64}``, else raise ``InvalidUploadId``.

    Drivers call this before building any path or key from a caller-supplied id, so ids
    such as ``../x`` or ``a/b`` can never escape the store root.
    """
    if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidUploadId(str(upload_id))
    return upload_id


def read_stop(
    digest: Digest, stored: int | None, start: int, end: int | None, expected_size: int | None
) -> int:
    """Where a read of ``[start, end)`` stops in a blob of ``stored`` bytes (None: not
    stored), after the checks every driver's ``read`` makes first: ``BlobNotFound``,
    ``StoredSizeDiffers`` (when the caller's ``expected_size`` is not the stored size),
    ``InvalidRange``."""
    if stored is None:
        raise BlobNotFound(digest)
    if expected_size is not None and stored != expected_size:
        raise StoredSizeDiffers(digest, stored)
    stop = stored if end is None else end
    if not 0 <= start <= stop <= stored:
        raise InvalidRange(start, end, stored)
    return stop


def blob_key(digest: Digest) -> str:
    """The store-relative key of a blob: ``blobs/<alg>/<2 hex>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


# ``session_locks(upload_id)``: a release function once the calling process holds the
# upload session against every other process sharing the store, None while another holds
# it. Blocking (a database round trip): drivers call it from a thread. Given to drivers
# whose staged uploads live where several processes reach them (object storage).
SessionLocks = Callable[[str], Callable[[], None] | None]


RelayMethod = Literal["GET", "HEAD"]


@dataclass(frozen=True)
class RelaySource:
    """Where the blob port fetches a blob it relays (`BlobStore.relay_source`): a presigned
    URL, and the TLS context for an ``https`` one."""

    url: str
    tls: ssl.SSLContext | None = None


class BlobStore(Protocol):
    """Content-addressed blob storage with resumable, verified uploads."""

    # True when `relay_source` names URLs: the blob port can then serve the store's blobs
    # by fetching them (object storage); a filesystem store hands it files instead.
    relays: bool

    async def start_upload(self, upload_id: str) -> None:
        """Create an empty upload session (``UploadExists`` if the id is taken,
        ``StorageFull`` with nothing left behind if the store has no room)."""

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
        limit: int | None = None,
        *,
        final: Digest | None = None,
    ) -> int:
        """Append ``chunks`` at ``offset`` and return the new staged size.

        ``final`` says the caller commits the session as that digest right after this
        append (a monolithic push, offset 0). A driver whose commit would copy the bytes
        (object storage) may then stream them straight to the blob's key, completing the
        write only if the digest matches; ``commit_upload`` still decides: it reports a
        mismatch (nothing published) or ends the session. Drivers may ignore the hint.

        ``StorageFull`` when the store has no room: what was written before stays staged
        (``upload_size`` says how much), so the client can resume once there is space.

        ``UploadOffsetMismatch`` (nothing written) when ``offset`` is not the staged size;
        ``UploadTooLarge`` (chunk rolled back) when the stream carries more than ``limit``
        bytes; ``UploadInProgress`` when another append/commit holds the session. If the
        stream fails part-way, bytes received so far may stay staged and ``upload_size``
        reports exactly what is staged.
        """
        ...

    async def upload_size(self, upload_id: str) -> int:
        """Bytes staged so far (``UploadNotFound`` if there is no such session)."""
        ...

    async def commit_upload(
        self,
        upload_id: str,
        expected: Digest,
        expected_size: int | None = None,
        *,
        replace: bool = False,
    ) -> BlobInfo:
        """Verify and publish the staged content as a blob; the session ends either way.

        ``DigestMismatch``/``SizeMismatch`` discard the staged data and publish nothing.
        Committing content that is already stored just drops the staged copy, unless the
        stored copy has another size (truncated or grown on disk) or ``replace`` is set
        (the caller knows the stored copy is corrupt): the verified staged content then
        takes its place, which is how a push heals a damaged blob. ``StorageFull`` keeps
        the session and its staged data, so the commit can be retried.
        """
        ...

    async def cancel_upload(self, upload_id: str) -> None:
        """Discard a session and its staged data (``UploadNotFound`` if absent)."""

    async def put_blob(self, data: bytes, expected: Digest, *, replace: bool = False) -> BlobInfo:
        """Store a small blob in one call, verified (and healing) like ``commit_upload``."""
        ...

    async def hash_blob(self, digest: Digest) -> BlobInfo:
        """Digest (under ``digest``'s algorithm) and size of the bytes actually stored.

        Reads the whole blob (``BlobNotFound`` if absent); ``ac adm registry verify``
        compares the answer with the name to find blobs damaged in storage.
        """
        ...

    async def stat(self, digest: Digest) -> int | None:
        """The size of a committed blob, or None if it is not stored."""
        ...

    def local_path(self, digest: Digest) -> str | None:
        """A filesystem path for zero-copy sending, or None (remote driver / not stored)."""
        ...

    async def redirect_url(self, digest: Digest) -> str | None:
        """A URL a client may be redirected to for the blob (presigned), or None when the
        driver has none. For a blob the caller knows is stored: it is not checked (a
        presigned URL is computed without asking the store)."""
        ...

    async def relay_source(self, digest: Digest, method: RelayMethod = "GET") -> RelaySource | None:
        """A presigned ``method`` (GET or HEAD) request for the blob that the blob port
        makes on a client's behalf to relay the answer, or None when the driver has none.
        Like ``redirect_url`` it asks nothing of the store."""
        ...

    async def read(
        self,
        digest: Digest,
        start: int = 0,
        end: int | None = None,
        *,
        expected_size: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a blob (``end`` exclusive, None = to the end).

        Awaiting this checks existence and range first (``BlobNotFound``,
        ``InvalidRange``) so callers can answer before sending headers. With
        ``expected_size`` (the size the caller recorded) a stored blob of another size
        raises ``StoredSizeDiffers`` instead; on object storage a whole read then checks
        it in the same request that reads the bytes.
        """
        ...

    async def read_all(self, digest: Digest) -> bytes:
        """The whole content of a (small) blob (``BlobNotFound`` if absent)."""
        ...

    async def delete(self, digest: Digest) -> bool:
        """Delete a blob; True if it existed."""
        ...

    async def delete_many(self, digests: Sequence[Digest]) -> None:
        """Delete several blobs, absent ones included, in as few requests as the store
        allows (GC's sweep: one ``DeleteObjects`` per 1,000 keys on S3). Raises when any
        could not be deleted; repeating the call is safe."""
        ...

    def iter_blobs(self) -> AsyncIterator[StoredBlob]:
        """Every committed blob, in no particular order."""
        ...

    def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        """Every upload session still staged, in no particular order."""
        ...

    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        """Unfinished multipart uploads under the store's prefix (none on a filesystem)."""
        ...

    async def abort_pending_write(self, write: PendingWrite) -> None:
        """Abort one unfinished multipart upload, freeing its parts (gone already: fine)."""
        ...
