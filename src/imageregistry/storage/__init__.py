"""Blob storage: the ``BlobStore`` driver protocol, its drivers and the factory choosing one.

``open_blob_store`` turns a configured location into a driver: ``file:///abs/path`` or a
plain filesystem path selects the filesystem driver, ``memory://`` the in-memory fake and
``s3://BUCKET/PREFIX`` the S3 driver (settings from the ``storage_s3:`` block and the AWS
environment, see ``storage/s3config.py``). Any other scheme is a ``ConfigurationError``; a
misspelt URL must stop the server rather than silently store blobs somewhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from imageregistry.storage.driver import (
    BlobInfo,
    BlobStore,
    SessionLocks,
    StoredBlob,
    StoredUpload,
    blob_key,
    validate_upload_id,
)
from imageregistry.storage.errors import ConfigurationError
from imageregistry.storage.filesystem import FilesystemBlobStore
from imageregistry.storage.memory import InMemoryBlobStore

__all__ = [
    "BlobInfo",
    "BlobStore",
    "ConfigurationError",
    "FilesystemBlobStore",
    "InMemoryBlobStore",
    "SessionLocks",
    "StoredBlob",
    "StoredUpload",
    "blob_key",
    "check_blob_store",
    "open_blob_store",
    "validate_upload_id",
]

# RFC 3986 §3.1 scheme, followed by "://" (a bare "c:" or "name:x" stays a path).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_blob_store(
    url_or_path: str,
    *,
    fsync: bool = True,
    direct_io: bool = True,
    s3: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    session_locks: SessionLocks | None = None,
) -> BlobStore:
    """Build the driver for ``url_or_path`` (see the module docstring).

    ``s3`` is the ``storage_s3:`` block and ``env`` the environment (default
    ``os.environ``) the S3 driver reads its AWS variables from; ``session_locks`` makes
    the S3 driver's appends to one upload exclusive across processes (see
    ``S3BlobStore``; the filesystem driver locks its staged files itself)."""
    if not url_or_path or not url_or_path.strip():
        raise ConfigurationError("blob storage location is empty")
    match = _SCHEME.match(url_or_path)
    if match is None:
        return FilesystemBlobStore(Path(url_or_path), fsync=fsync, direct_io=direct_io)
    scheme = match.group(1).lower()
    parts = urlsplit(url_or_path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"file URL {url_or_path!r} names host {parts.netloc!r}; use file:///abs/path"
            )
        if parts.query or parts.fragment or not parts.path:
            raise ConfigurationError(f"file URL {url_or_path!r} must be file:///abs/path only")
        return FilesystemBlobStore(Path(unquote(parts.path)), fsync=fsync, direct_io=direct_io)
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ConfigurationError(f"memory URL {url_or_path!r} takes no host, path or options")
        return InMemoryBlobStore()
    if scheme == "s3":
        return _open_s3(url_or_path, s3 or {}, env, session_locks)
    raise ConfigurationError(
        f"unknown blob storage scheme {scheme!r} in {url_or_path!r} "
        "(supported: file:///path, a plain path, memory://, s3://bucket/prefix)"
    )


def check_blob_store(store: BlobStore) -> None:
    """The start-up check of ``serve``: a remote store must be reachable and usable.

    Raises ``ConfigurationError`` with one line naming the bucket and the failed check
    (wrong credentials, missing bucket, unreachable endpoint); local drivers pass.
    """
    from imageregistry.storage.s3 import S3BlobStore

    if isinstance(store, S3BlobStore):
        import asyncio

        asyncio.run(store.check())


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|[A-Za-z0-9._-]{1,255}")


def _open_s3(
    url: str,
    block: Mapping[str, Any],
    env: Mapping[str, str] | None,
    session_locks: SessionLocks | None = None,
) -> BlobStore:
    from imageregistry.storage.s3 import S3BlobStore
    from imageregistry.storage.s3config import resolve

    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigurationError(
            f"s3 URL {url!r} must be s3://BUCKET/PREFIX only (settings go in storage_s3:)"
        )
    if not _BUCKET.fullmatch(parts.netloc):
        raise ConfigurationError(f"s3 URL {url!r}: {parts.netloc!r} is not a bucket name")
    prefix = unquote(parts.path).strip("/")
    if any(piece in ("", ".", "..") for piece in prefix.split("/")) and prefix:
        raise ConfigurationError(f"s3 URL {url!r}: the prefix has an empty, . or .. segment")
    return S3BlobStore(resolve(parts.netloc, prefix, block, env), session_locks)
