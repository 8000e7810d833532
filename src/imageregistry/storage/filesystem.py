"""Filesystem blob store: uploads staged under ``uploads/``, blobs renamed into place.

Layout under the root: ``uploads/<id>/data`` holds an upload's staged bytes (its size is
the session's offset, so any process sharing the directory can continue it) and
``blobs/<alg>/<2 hex>/<hex>`` holds committed blobs. Commit verifies the digest, fsyncs the
staged file, renames it into place (atomic within one filesystem, so a reader sees the
whole blob or nothing) and fsyncs the directory so the rename survives a power cut.
Nothing is ever written inside ``blobs/`` except by that rename, so a crash can leave
garbage only under ``uploads/`` and a staged upload is never visible through ``stat``.
Per-upload ``flock`` keeps two requests (in this process or another) from appending to
or committing the same session at once.

A commit whose blob already exists keeps the stored file only when it has the staged
size and the caller does not know it to be corrupt; otherwise the verified staged file
replaces it by the same rename, so pushing a blob again heals a damaged copy. A full
filesystem (ENOSPC, EDQUOT) becomes ``StorageFull``, logged once until a commit succeeds
again; staged bytes written before it stay, so the upload can resume.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

from imageregistry.content.digest import SUPPORTED_ALGORITHMS, Digest, InvalidDigest, digest_of
from imageregistry.storage.driver import (
    BlobInfo,
    PendingWrite,
    RelayMethod,
    RelaySource,
    StoredBlob,
    StoredUpload,
    blob_key,
    read_stop,
    validate_upload_id,
)
from imageregistry.storage.errors import (
    BlobNotFound,
    DigestMismatch,
    SizeMismatch,
    StorageFull,
    UploadExists,
    UploadInProgress,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from imageregistry.storage.staging import (
    BLOCK_SIZE,
    FileState,
    HashCache,
    LimitExceeded,
    StagedAppender,
    Staging,
    hash_file,
    open_direct,
    write_all,
)

log = logging.getLogger(__name__)

_HEX2 = frozenset(f"{i:02x}" for i in range(256))
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class _FullReport:
    """Logs a full filesystem once per episode (not per chunk or per request): the first
    failure warns, later ones stay quiet until a commit succeeds again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.full = False

    def failed(self, what: str, exc: OSError) -> None:
        if not self.full:
            self.full = True
            log.error(
                "blob storage %s is full (%s while %s); uploads answer 507 until space is freed",
                self.root,
                exc.strerror or exc,
                what,
            )

    def succeeded(self) -> None:
        if self.full:
            self.full = False
            log.info("blob storage %s accepts writes again", self.root)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """``BlobStore`` on a local (or shared POSIX) filesystem."""

    relays = False  # the blob port sends its files (`local_path`) with sendfile(2)

    def __init__(
        self,
        root: Path,
        fsync: bool = True,
        direct_io: bool = True,
        # sha512 hashing runs at ~435 MiB/s here and would cap every push; nearly all
        # clients use sha256, so only that is hashed while streaming and a sha512 commit
        # re-hashes the staged file once.
        streaming_algorithms: Iterable[str] = ("sha256",),
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.direct_io = direct_io
        self._hashes = HashCache(streaming_algorithms)
        self._staging = Staging()
        self._full = _FullReport(self.root)

    @contextlib.contextmanager
    def _room(self, what: str) -> Iterator[None]:
        """Turn ENOSPC/EDQUOT inside the block into ``StorageFull`` (logged once)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _FULL_ERRNOS:
                raise
            self._full.failed(what, exc)
            raise StorageFull(f"{exc.strerror or exc} while {what}") from exc

    # -- paths ---------------------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        return self.root / "uploads" / validate_upload_id(upload_id)

    def _blob_path(self, digest: Digest) -> Path:
        return self.root / blob_key(digest)

    def _open_staged(self, upload_id: str, flags: int) -> int:
        """Open and lock an upload's staged file (caller closes the descriptor)."""
        path = self._upload_dir(upload_id) / "data"
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UploadInProgress(upload_id) from None
        return fd

    # -- uploads -------------------------------------------------------------------------

    async def start_upload(self, upload_id: str) -> None:
        directory = self._upload_dir(upload_id)
        with self._room("starting an upload"):
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                directory.mkdir()
            except FileExistsError:
                raise UploadExists(upload_id) from None
            try:
                os.close(os.open(directory / "data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except OSError:
                shutil.rmtree(directory, ignore_errors=True)  # no half-made session
                raise

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
        limit: int | None = None,
        *,
        final: Digest | None = None,  # nothing to gain: commit is a rename
    ) -> int:
        with self._room("staging an upload"):
            return await self._append(upload_id, offset, chunks, limit)

    async def _append(
        self, upload_id: str, offset: int, chunks: AsyncIterator[bytes], limit: int | None
    ) -> int:
        fd = self._open_staged(upload_id, os.O_WRONLY)
        direct_fd: int | None = None
        try:
            state = FileState.of(fd)
            if offset != state.size:
                raise UploadOffsetMismatch(upload_id, offset, state.size)
            if self.direct_io:
                direct_fd = open_direct(str(self._upload_dir(upload_id) / "data"))
            hashers = self._hashes.take(upload_id, state)
            rollback = None if hashers is None else {a: h.copy() for a, h in hashers.items()}
            appender = StagedAppender(
                self._staging, fd, offset, limit, hashers, direct_fd=direct_fd, writeback=self.fsync
            )
            try:
                async for chunk in chunks:
                    await appender.feed(chunk)
                await appender.finish()
            except LimitExceeded:
                appender.discard()
                os.ftruncate(fd, offset)
                if rollback is not None:
                    self._hashes.put(upload_id, FileState.of(fd), rollback)
                raise UploadTooLarge(upload_id, limit or 0) from None
            except BaseException:
                # Client went away or the stream failed: keep what arrived (a client may
                # resume from upload_size), but the hashers no longer match the file.
                with contextlib.suppress(OSError):
                    appender.flush_buffer()
                raise
            finally:
                appender.close()
            if hashers is not None:
                self._hashes.put(upload_id, FileState.of(fd), hashers)
            return appender.size
        finally:
            if direct_fd is not None:
                os.close(direct_fd)
            os.close(fd)

    async def upload_size(self, upload_id: str) -> int:
        try:
            return (self._upload_dir(upload_id) / "data").stat().st_size
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None

    async def commit_upload(
        self,
        upload_id: str,
        expected: Digest,
        expected_size: int | None = None,
        *,
        replace: bool = False,
    ) -> BlobInfo:
        fd = self._open_staged(upload_id, os.O_RDONLY)
        try:
            state = FileState.of(fd)
            hashers = self._hashes.take(upload_id, state)
            if expected_size is not None and state.size != expected_size:
                self._discard(upload_id)
                raise SizeMismatch(expected_size, state.size)
            if hashers is not None and expected.algorithm in hashers:
                actual_hex = hashers[expected.algorithm].hexdigest()
            else:
                hexes = await anyio.to_thread.run_sync(hash_file, fd, (expected.algorithm,))
                actual_hex = hexes[expected.algorithm]
            actual = Digest(expected.algorithm, actual_hex)
            if actual != expected:
                self._discard(upload_id)
                raise DigestMismatch(expected, actual)
            staged = self._upload_dir(upload_id) / "data"
            with self._room("committing an upload"):
                await anyio.to_thread.run_sync(
                    self._publish, fd, staged, expected, state.size, replace
                )
        finally:
            os.close(fd)
        self._discard(upload_id)
        self._full.succeeded()
        return BlobInfo(expected, state.size)

    async def cancel_upload(self, upload_id: str) -> None:
        directory = self._upload_dir(upload_id)
        self._hashes.drop(upload_id)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None

    def _discard(self, upload_id: str) -> None:
        self._hashes.drop(upload_id)
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    def _publish(self, fd: int, staged: Path, digest: Digest, size: int, replace: bool) -> None:
        """Make verified staged bytes (``size`` of them) the blob ``digest``, unless an
        intact copy is already stored (blocking: run in a thread)."""
        target = self._blob_path(digest)
        try:
            stored: int | None = target.stat().st_size
        except FileNotFoundError:
            stored = None
        if stored == size and not replace:
            return  # Dedup: identical content is already stored; the caller drops ours.
        if stored is not None:
            why = "it is marked corrupt" if stored == size else f"it has {stored} bytes"
            log.warning("replacing stored blob %s (%d bytes): %s", digest, size, why)
        if self.fsync:
            os.fsync(fd)
        self._make_dirs(target.parent)
        os.replace(staged, target)
        if self.fsync:
            _fsync_dir(target.parent)

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir()
        if self.fsync:
            # A new directory entry is only durable once its parent is synced.
            for path in missing:
                _fsync_dir(path.parent)

    async def put_blob(self, data: bytes, expected: Digest, *, replace: bool = False) -> BlobInfo:
        actual = digest_of(data, expected.algorithm)
        if actual != expected:
            raise DigestMismatch(expected, actual)
        if replace or await self.stat(expected) != len(data):
            staging_id = str(uuid.uuid4())
            await self.start_upload(staging_id)
            fd = self._open_staged(staging_id, os.O_WRONLY)
            try:
                with self._room("storing a blob"):
                    write_all(fd, data, 0)
                    staged = self._upload_dir(staging_id) / "data"
                    await anyio.to_thread.run_sync(
                        self._publish, fd, staged, expected, len(data), replace
                    )
            finally:
                os.close(fd)
                self._discard(staging_id)
        return BlobInfo(expected, len(data))

    async def hash_blob(self, digest: Digest) -> BlobInfo:
        try:
            fd = os.open(self._blob_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        try:
            hexes = await anyio.to_thread.run_sync(hash_file, fd, (digest.algorithm,))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        return BlobInfo(Digest(digest.algorithm, hexes[digest.algorithm]), size)

    # -- blobs ---------------------------------------------------------------------------

    async def stat(self, digest: Digest) -> int | None:
        try:
            st = self._blob_path(digest).stat()
        except FileNotFoundError:
            return None
        return st.st_size

    def local_path(self, digest: Digest) -> str | None:
        path = self._blob_path(digest)
        return str(path) if path.is_file() else None

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
        stop = read_stop(digest, await self.stat(digest), start, end, expected_size)
        return self._stream(digest, start, stop)

    async def _stream(self, digest: Digest, start: int, stop: int) -> AsyncIterator[bytes]:
        try:
            fd = os.open(self._blob_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        try:
            while start < stop:
                block = os.pread(fd, min(BLOCK_SIZE, stop - start), start)
                if not block:
                    raise OSError(errno.EIO, f"blob {digest} shrank while being read")
                start += len(block)
                yield block
        finally:
            os.close(fd)

    async def read_all(self, digest: Digest) -> bytes:
        try:
            return self._blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    async def delete(self, digest: Digest) -> bool:
        try:
            self._blob_path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    async def delete_many(self, digests: Sequence[Digest]) -> None:
        for digest in digests:  # no batch call for unlink; one syscall each is cheap
            await self.delete(digest)

    async def iter_blobs(self) -> AsyncIterator[StoredBlob]:
        for algorithm in SUPPORTED_ALGORITHMS:
            base = self.root / "blobs" / algorithm
            prefixes = await anyio.to_thread.run_sync(_list_dirs, base)
            for prefix in prefixes:
                if prefix not in _HEX2:
                    continue
                files = await anyio.to_thread.run_sync(_list_files, base / prefix)
                for name, st in files:
                    try:
                        digest = Digest(algorithm, name)
                    except InvalidDigest:
                        continue  # not ours (editor backup, stray file): never a blob
                    if digest.hex[:2] == prefix:
                        yield StoredBlob(digest, st.st_size, _mtime(st))

    async def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        base = self.root / "uploads"
        for upload_id in await anyio.to_thread.run_sync(_list_dirs, base):
            try:
                directory = self._upload_dir(upload_id)
            except UploadNotFound:
                continue
            # A session whose data file is missing (crash inside start_upload) is still
            # reported, as empty, so cleanup can cancel it.
            try:
                st = (directory / "data").stat()
                size = st.st_size
            except FileNotFoundError:
                try:
                    st = directory.stat()
                except FileNotFoundError:
                    continue  # cancelled while we were listing
                size = 0
            yield StoredUpload(upload_id, size, _mtime(st))

    async def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        return  # files are written in place: nothing is ever half-uploaded elsewhere
        yield  # pragma: no cover - makes this an async generator

    async def abort_pending_write(self, write: PendingWrite) -> None:
        return None


def _list_dirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _list_files(path: Path) -> list[tuple[str, os.stat_result]]:
    found: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False):
                        found.append((entry.name, entry.stat(follow_symlinks=False)))
    except FileNotFoundError:
        pass
    return found
