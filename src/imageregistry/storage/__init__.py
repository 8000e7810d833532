"""Blob storage: the ``BlobStore`` driver protocol, its drivers and the factory choosing one.

``open_blob_store`` turns a configured location into a driver: ``file:///abs/path`` or a
plain filesystem path selects the filesystem driver and ``memory://`` the in-memory fake.
Any other scheme is a ``ConfigurationError`` (an S3 driver will claim ``s3://``); a
misspelt URL must stop the server rather than silently store blobs somewhere else.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imageregistry.storage.driver import (
    BlobInfo,
    BlobStore,
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
    "StoredBlob",
    "StoredUpload",
    "blob_key",
    "open_blob_store",
    "validate_upload_id",
]

# RFC 3986 §3.1 scheme, followed by "://" (a bare "c:" or "name:x" stays a path).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_blob_store(url_or_path: str, *, fsync: bool = True, direct_io: bool = True) -> BlobStore:
    """Build the driver for ``url_or_path`` (see the module docstring)."""
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
    raise ConfigurationError(
        f"unknown blob storage scheme {scheme!r} in {url_or_path!r} "
        "(supported: file:///path, a plain path, memory://)"
    )
