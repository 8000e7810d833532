"""Writing an upload's chunk stream to a staged file while hashing it, with flat memory.

The filesystem driver appends each request body through a ``StagedAppender``: chunks are
gathered into ~1 MiB blocks *without copying them* (a block is a list of the received
``bytes`` objects; only chunks under 64 KiB are coalesced, to keep the number of buffers
per write small), each block is written with one ``pwritev`` at an explicit offset
(plain blocking I/O: it lands in the page cache in well under a millisecond), and the
block's chunks are then hashed in worker threads while the next block is being received.
``hashlib`` releases the GIL on large buffers, so on a 2-core machine sha512 (the slow
one, ~0.4 GB/s here) runs beside the event loop instead of stalling it. At most two
blocks are alive per upload (one filling, one hashing), whatever the blob size.

``HashCache`` keeps the running hashers per upload id. It is only a speed-up: an entry is
trusted only when the staged file still has the size, inode and mtime recorded after the
last append by this process; otherwise commit re-hashes the file. That is sound because
staged bytes below the current size are never rewritten (appends only happen at the end,
under a lock, and a rolled-back chunk only truncates back to where it started).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from imageregistry.content.digest import Hasher, new_hasher

BLOCK_SIZE = 1 << 20
COALESCE_BELOW = 64 << 10  # smaller chunks are copied together; larger ones kept as they are
_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class FileState:
    """What identifies one version of a staged file."""

    size: int
    inode: int
    mtime_ns: int

    @classmethod
    def of(cls, fd: int) -> FileState:
        st = os.fstat(fd)
        return cls(st.st_size, st.st_ino, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class _Entry:
    state: FileState
    hashers: dict[str, Hasher]


class HashCache:
    """Running hashers per upload id, valid only for the file state they were made for."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        self.algorithms = tuple(algorithms)
        self._entries: dict[str, _Entry] = {}

    def fresh(self) -> dict[str, Hasher]:
        return {alg: new_hasher(alg) for alg in self.algorithms}

    def take(self, upload_id: str, state: FileState) -> dict[str, Hasher] | None:
        """Remove and return the hashers for ``upload_id`` if they match ``state``."""
        entry = self._entries.pop(upload_id, None)
        if entry is not None and entry.state == state:
            return entry.hashers
        if state.size == 0 and self.algorithms:
            return self.fresh()
        return None

    def put(self, upload_id: str, state: FileState, hashers: dict[str, Hasher]) -> None:
        # Bounded so abandoned uploads cannot grow memory; an evicted entry only costs a
        # re-hash at commit.
        while len(self._entries) >= _CACHE_ENTRIES:
            self._entries.pop(next(iter(self._entries)))
        self._entries[upload_id] = _Entry(state, hashers)

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)


class LimitExceeded(Exception):
    """The chunk stream carried more bytes than the caller allowed."""


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """``pwrite`` all of ``data`` at ``offset`` (looping over short writes); return the end."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]
    return offset


Block = list[bytes | bytearray]


def write_chunks(fd: int, chunks: Block, offset: int) -> int:
    """``pwritev`` all ``chunks`` back to back at ``offset``; return the end offset."""
    written = os.pwritev(fd, chunks, offset) if chunks else 0
    end = offset + sum(len(c) for c in chunks)
    position = offset + written
    if position < end:  # short write (rare on regular files): finish chunk by chunk
        skip = written
        for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            position = write_all(fd, memoryview(chunk)[skip:], position)
            skip = 0
    return end


def _hash_chunks(hasher: Hasher, chunks: Block) -> None:
    for chunk in chunks:
        hasher.update(chunk)


WRITEBACK_EVERY = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux `sync_file_range(2)` from libc, or None where there is no such call."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing these dirty pages to disk now, without waiting; closes `fd`.

    With `blob_fsync` the commit's fsync then finds most of a large blob already on disk
    instead of flushing all of it at the end, so disk writes overlap the upload. A hint
    only: errors are ignored, the fsync at commit is what guarantees durability. `fd` is
    the caller's own duplicate, so this may run in a thread after the upload's descriptor
    was closed (and its number reused) without touching another file.
    """
    try:
        function = _sync_file_range()
        if function is not None:
            function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


class StagedAppender:
    """Appends one chunk stream to a staged file, hashing block by block."""

    def __init__(
        self,
        fd: int,
        start: int,
        limit: int | None,
        hashers: dict[str, Hasher] | None,
        writeback: bool = False,
    ) -> None:
        self.fd = fd
        self.size = start
        self._writeback_from = start if writeback and _sync_file_range() else None
        self.hashers = hashers
        self._end_limit = None if limit is None else start + limit
        self._block: Block = []
        self._buffered = 0
        self._tail: bytearray | None = None  # the block's last entry while coalescing
        self._pending: asyncio.Future[list[None]] | None = None

    async def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._buffered += len(chunk)
        if self._end_limit is not None and self.size + self._buffered > self._end_limit:
            raise LimitExceeded
        if len(chunk) >= COALESCE_BELOW:
            self._block.append(chunk)  # bytes are immutable: keep a reference, no copy
            self._tail = None
        elif self._tail is None:
            self._tail = bytearray(chunk)
            self._block.append(self._tail)
        else:
            self._tail += chunk
        if self._buffered >= BLOCK_SIZE:
            await self._write_block()

    async def finish(self) -> None:
        """Write what is buffered and wait for every hash update to land."""
        if self._block:
            await self._write_block()
        await self._settle()

    def flush_buffer(self) -> None:
        """Error path: persist buffered bytes without hashing them (hashers become stale)."""
        self.size = write_chunks(self.fd, self._take(), self.size)

    def _take(self) -> Block:
        block, self._block, self._buffered, self._tail = self._block, [], 0, None
        return block

    async def _write_block(self) -> None:
        # The block's buffers are never mutated after this, so hashing may read them later.
        block = self._take()
        self.size = write_chunks(self.fd, block, self.size)
        hashers = list((self.hashers or {}).values())
        start, writeback = self._writeback_from, False
        if start is not None and self.size - start >= WRITEBACK_EVERY:
            writeback, self._writeback_from = True, self.size
        if not hashers and not writeback:
            return
        await self._settle()
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(None, _hash_chunks, hasher, block) for hasher in hashers]
        if writeback and start is not None:
            dup = os.dup(self.fd)
            jobs.append(loop.run_in_executor(None, start_writeback, dup, start, self.size - start))
        self._pending = asyncio.gather(*jobs)

    async def _settle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending


def hash_file(fd: int, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of a whole file under each algorithm (blocking: run it in a thread)."""
    hashers = {alg: new_hasher(alg) for alg in algorithms}
    offset = 0
    while block := os.pread(fd, BLOCK_SIZE, offset):
        for hasher in hashers.values():
            hasher.update(block)
        offset += len(block)
    return {alg: hasher.hexdigest() for alg, hasher in hashers.items()}
