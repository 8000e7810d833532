"""Errors raised by blob store drivers.

Drivers raise these domain errors and never HTTP statuses; the OCI layer maps each to one
spec error code in its table (e.g. ``UploadOffsetMismatch`` → 416 with the current range,
``DigestMismatch`` → ``DIGEST_INVALID``, ``UploadNotFound`` → ``BLOB_UPLOAD_UNKNOWN``).
The project-wide ``ConfigurationError`` is raised when a store cannot be built from its
settings, so a typo in a storage URL stops the server instead of silently falling back to
another driver.
"""

from __future__ import annotations

from imageregistry.configerror import ConfigurationError as ConfigurationError
from imageregistry.content.digest import Digest


class StorageError(Exception):
    """Base class of every blob store error."""


class BlobNotFound(StorageError):
    """No blob is stored under the digest."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} not found")
        self.digest = digest


class UploadNotFound(StorageError):
    """No upload session with this id exists (never started, committed or cancelled)."""

    def __init__(self, upload_id: str, reason: str = "not found") -> None:
        super().__init__(f"upload {upload_id[:80]!r} {reason}")
        self.upload_id = upload_id


class InvalidUploadId(UploadNotFound):
    """The id is not of the form ``[A-Za-z0-9-]{1,64}``; it can name no upload."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id, "is not a valid upload id ([A-Za-z0-9-]{1,64})")


class UploadExists(StorageError):
    """``start_upload`` was called with an id that already names a session."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"upload {upload_id!r} already exists")
        self.upload_id = upload_id


class UploadOffsetMismatch(StorageError):
    """An append did not start where the staged data ends; nothing was written."""

    def __init__(self, upload_id: str, offset: int, size: int) -> None:
        super().__init__(f"upload {upload_id!r}: chunk starts at {offset} but {size} bytes staged")
        self.upload_id = upload_id
        self.offset = offset
        self.size = size


class UploadInProgress(StorageError):
    """Another append or commit is working on this upload right now."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"upload {upload_id!r} is busy with another request")
        self.upload_id = upload_id


class UploadTooLarge(StorageError):
    """The chunk stream carried more than the caller's limit; the chunk was rolled back."""

    def __init__(self, upload_id: str, limit: int) -> None:
        super().__init__(f"upload {upload_id!r}: chunk exceeds its limit of {limit} bytes")
        self.upload_id = upload_id
        self.limit = limit


class DigestMismatch(StorageError):
    """The staged content does not hash to the expected digest; it was discarded."""

    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"content digest is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class SizeMismatch(StorageError):
    """The staged content does not have the expected size; it was discarded."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"content size is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class StoredSizeDiffers(StorageError):
    """A read found the stored blob at another size than the caller recorded (damaged in
    storage); nothing was read."""

    def __init__(self, digest: Digest, stored: int) -> None:
        super().__init__(f"blob {digest} has {stored} bytes in storage")
        self.digest = digest
        self.stored = stored


class InvalidRange(StorageError):
    """A read range lies outside the blob."""

    def __init__(self, start: int, end: int | None, size: int) -> None:
        super().__init__(f"range [{start}, {end}) is outside a blob of {size} bytes")
        self.start = start
        self.end = end
        self.size = size


class StorageFull(StorageError):
    """The store has no room (ENOSPC, EDQUOT); nothing partial was published.

    An upload keeps the bytes staged before the failure, so the client may resume or
    retry once space is freed; the OCI layer answers 507 with ``Retry-After``.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(f"blob storage is full: {detail}")


class StorageUnavailable(StorageError):
    """The store did not answer or failed (object store unreachable, 5xx after retries).

    Nothing was published; the OCI layer answers 503 ``UNAVAILABLE`` with ``Retry-After``.
    """

    retry_after = 10

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"blob storage unavailable during {operation}: {detail}")
        self.operation = operation
