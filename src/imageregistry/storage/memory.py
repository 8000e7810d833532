"""In-memory ``BlobStore`` fake for unit tests of the layers above storage.

It follows the same contract as the filesystem driver (the shared driver suite runs
against both) but keeps everything in dictionaries held by a ``MemoryBackend``. Tests
damage a stored blob by rewriting ``backend.blobs[digest]``; a commit heals it exactly as
on disk (another size, or ``replace``). Several
store instances may share one backend, which stands in for several replicas sharing one
object store: upload state lives in the backend, never in the store instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from imageregistry.clock import system_clock
from imageregistry.content.digest import Digest, digest_of
from imageregistry.storage.driver import (
    BlobInfo,
    PendingWrite,
    RelayMethod,
    RelaySource,
    StoredBlob,
    StoredUpload,
    read_stop,
    validate_upload_id,
)
from imageregistry.storage.errors import (
    BlobNotFound,
    DigestMismatch,
    SizeMismatch,
    UploadExists,
    UploadInProgress,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLarge,
)

_READ_BLOCK = 1 << 16


@dataclass
class _Upload:
    data: bytearray = field(default_factory=bytearray)
    modified: datetime = field(default_factory=system_clock)
    busy: bool = False


@dataclass
class MemoryBackend:
    """The shared state behind one or more ``InMemoryBlobStore`` instances."""

    blobs: dict[Digest, tuple[bytes, datetime]] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)


class InMemoryBlobStore:
    """``BlobStore`` keeping blobs and uploads in memory."""

    relays = False

    def __init__(self, backend: MemoryBackend | None = None) -> None:
        self.backend = backend if backend is not None else MemoryBackend()

    def _upload(self, upload_id: str) -> _Upload:
        upload = self.backend.uploads.get(validate_upload_id(upload_id))
        if upload is None:
            raise UploadNotFound(upload_id)
        return upload

    async def start_upload(self, upload_id: str) -> None:
        if validate_upload_id(upload_id) in self.backend.uploads:
            raise UploadExists(upload_id)
        self.backend.uploads[upload_id] = _Upload()

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
        limit: int | None = None,
        *,
        final: Digest | None = None,  # nothing to gain: commit copies no bytes here
    ) -> int:
        upload = self._upload(upload_id)
        if upload.busy:
            raise UploadInProgress(upload_id)
        if offset != len(upload.data):
            raise UploadOffsetMismatch(upload_id, offset, len(upload.data))
        upload.busy = True
        try:
            async for chunk in chunks:
                if limit is not None and len(upload.data) + len(chunk) - offset > limit:
                    del upload.data[offset:]
                    raise UploadTooLarge(upload_id, limit)
                upload.data += chunk
                upload.modified = system_clock()
        finally:
            upload.busy = False
        return len(upload.data)

    async def upload_size(self, upload_id: str) -> int:
        return len(self._upload(upload_id).data)

    async def commit_upload(
        self,
        upload_id: str,
        expected: Digest,
        expected_size: int | None = None,
        *,
        replace: bool = False,
    ) -> BlobInfo:
        upload = self._upload(upload_id)
        if upload.busy:
            raise UploadInProgress(upload_id)
        del self.backend.uploads[upload_id]
        data = bytes(upload.data)
        if expected_size is not None and len(data) != expected_size:
            raise SizeMismatch(expected_size, len(data))
        return await self.put_blob(data, expected, replace=replace)

    async def cancel_upload(self, upload_id: str) -> None:
        self._upload(upload_id)
        del self.backend.uploads[upload_id]

    async def put_blob(self, data: bytes, expected: Digest, *, replace: bool = False) -> BlobInfo:
        actual = digest_of(data, expected.algorithm)
        if actual != expected:
            raise DigestMismatch(expected, actual)
        stored = self.backend.blobs.get(expected)
        if replace or stored is None or len(stored[0]) != len(data):
            self.backend.blobs[expected] = (bytes(data), system_clock())
        return BlobInfo(expected, len(data))

    async def hash_blob(self, digest: Digest) -> BlobInfo:
        data = await self.read_all(digest)
        return BlobInfo(digest_of(data, digest.algorithm), len(data))

    async def stat(self, digest: Digest) -> int | None:
        entry = self.backend.blobs.get(digest)
        return None if entry is None else len(entry[0])

    def local_path(self, digest: Digest) -> str | None:
        return None

    async def redirect_url(self, digest: Digest) -> str | None:
        return None

    async def relay_source(self, digest: Digest, method: RelayMethod = "GET") -> RelaySource | None:
        return None

    async def read(
        self,
        digest: Digest,
        start: int = 0,
        end: int | None = None,
        *,
        expected_size: int | None = None,
    ) -> AsyncIterator[bytes]:
        entry = self.backend.blobs.get(digest)
        data = b"" if entry is None else entry[0]
        stored = None if entry is None else len(data)
        stop = read_stop(digest, stored, start, end, expected_size)
        return _blocks(memoryview(data)[start:stop])

    async def read_all(self, digest: Digest) -> bytes:
        entry = self.backend.blobs.get(digest)
        if entry is None:
            raise BlobNotFound(digest)
        return entry[0]

    async def delete(self, digest: Digest) -> bool:
        return self.backend.blobs.pop(digest, None) is not None

    async def delete_many(self, digests: Sequence[Digest]) -> None:
        for digest in digests:
            self.backend.blobs.pop(digest, None)

    async def iter_blobs(self) -> AsyncIterator[StoredBlob]:
        for digest, (data, modified) in list(self.backend.blobs.items()):
            yield StoredBlob(digest, len(data), modified)

    async def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        for upload_id, upload in list(self.backend.uploads.items()):
            yield StoredUpload(upload_id, len(upload.data), upload.modified)

    async def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        return  # nothing is ever half-written here
        yield  # pragma: no cover - makes this an async generator

    async def abort_pending_write(self, write: PendingWrite) -> None:
        return None


async def _blocks(view: memoryview) -> AsyncIterator[bytes]:
    for start in range(0, len(view), _READ_BLOCK):
        yield bytes(view[start : start + _READ_BLOCK])
