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
import os
from collections.abc import Iterable
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


class StagedAppender:
    """Appends one chunk stream to a staged file, hashing block by block."""

    def __init__(
        self, fd: int, start: int, limit: int | None, hashers: dict[str, Hasher] | None
    ) -> None:
        self.fd = fd
        self.size = start
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
        if self.hashers is None:
            return
        await self._settle()
        loop = asyncio.get_running_loop()
        self._pending = asyncio.gather(
            *(
                loop.run_in_executor(None, _hash_chunks, hasher, block)
                for hasher in self.hashers.values()
            )
        )

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
