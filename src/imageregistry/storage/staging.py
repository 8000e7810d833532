"""Writing an upload's chunk stream to a staged file while hashing it, with flat memory.

The filesystem driver appends each request body through a ``StagedAppender``. Incoming
chunks are copied into page-aligned 2 MiB blocks (``mmap`` buffers reused from a small
pool the store owns, ``Staging``). A full block is handed to two worker threads: one writes it, one
feeds it to the running hashers (``hashlib`` releases the GIL on large buffers). The
event loop meanwhile fills the next block, so receiving, hashing and writing overlap.
At most two blocks are alive per upload (one filling, one in flight), whatever the blob
size.

Writes bypass the page cache (``O_DIRECT``) where the filesystem allows it. A staged
blob is fsynced before it is published anyway, so copying it into the page cache first
only to flush it again would double the memory traffic. On a virtual machine, fresh
page-cache pages can also be much slower than the disk: measured here, 1 GiB took
2.6-3.7 s through the page cache against 0.6-1.1 s direct. Direct writes need an aligned
offset, length and buffer, so only whole aligned blocks take that path. The head up to
the next 4 KiB boundary (when an append starts mid-page) and the tail of the last block
go through the page cache, as does everything when the filesystem refuses ``O_DIRECT``
(tmpfs, some network filesystems). Those buffered writes get a ``sync_file_range`` hint
so the commit's fsync finds little left to flush.

``HashCache`` keeps the running hashers per upload id. It is only a speed-up: an entry is
trusted only when the staged file still has the size, inode and mtime recorded after the
last append by this process; otherwise commit re-hashes the file. That is sound because
staged bytes below the current size are never rewritten (appends only happen at the end,
under a lock, and a rolled-back chunk only truncates back to where it started).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import functools
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from imageregistry.content.digest import Hasher, new_hasher

BLOCK_SIZE = 2 << 20
ALIGN = 4096  # the largest logical block size O_DIRECT may demand
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


# -- aligned buffers -------------------------------------------------------------------


class Staging:
    """What every upload of one blob store shares: a few reusable page-aligned buffers (so
    a large upload does not fault in fresh memory for every block, which is slow on a
    virtual machine) and the worker threads that write and hash blocks. Each upload has
    at most one block (a write and one job per hasher) queued at a time."""

    def __init__(self, idle_blocks: int = 8, threads: int = 8) -> None:
        self._keep = idle_blocks
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="staging"
        )

    def acquire(self) -> mmap.mmap:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return mmap.mmap(-1, BLOCK_SIZE)

    def release(self, block: mmap.mmap) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(block)
                return
        with contextlib.suppress(BufferError):  # a view still exists: the GC frees it
            block.close()


# -- writing one block ----------------------------------------------------------------

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


def open_direct(path: str) -> int | None:
    """A second, ``O_DIRECT`` descriptor for writing ``path``; None where unsupported."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the filesystem does not do direct I/O
            return None
        raise


def write_block(
    fd: int, direct_fd: int | None, view: memoryview, offset: int, writeback: bool
) -> None:
    """Write ``view`` at ``offset``: its aligned part with ``direct_fd`` when there is one
    and ``offset`` is aligned, the rest through ``fd`` (the page cache)."""
    direct = 0
    if direct_fd is not None and offset % ALIGN == 0:
        direct = len(view) - len(view) % ALIGN
        if direct:
            try:
                write_all(direct_fd, view[:direct], offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                direct = 0  # refused after all (alignment rules of this device): buffered
    if direct < len(view):
        write_all(fd, view[direct:], offset + direct)
        function = _sync_file_range() if writeback else None
        if function is not None:
            # A hint only (errors ignored): start writeback now so the commit's fsync has
            # little left; the fsync is what guarantees durability.
            function(fd, offset + direct, len(view) - direct, _SYNC_FILE_RANGE_WRITE)


def _hash_block(hasher: Hasher, view: memoryview) -> None:
    hasher.update(view)


# -- the appender ----------------------------------------------------------------------


class StagedAppender:
    """Appends one chunk stream to a staged file, hashing block by block.

    ``fd`` writes through the page cache; ``direct_fd`` (optional) is the same file opened
    with ``O_DIRECT``. The caller owns both descriptors and calls ``close`` before closing
    them: after ``close`` no worker thread touches them. ``writeback`` asks for early
    writeback of page-cache writes (when the blob will be fsynced at commit).
    """

    def __init__(
        self,
        staging: Staging,
        fd: int,
        start: int,
        limit: int | None,
        hashers: dict[str, Hasher] | None,
        direct_fd: int | None = None,
        writeback: bool = False,
    ) -> None:
        self._staging = staging
        self.fd = fd
        self.direct_fd = direct_fd
        self.writeback = writeback
        self.size = start  # end of what has been handed to a write
        self.hashers = hashers
        self._end_limit = None if limit is None else start + limit
        self._block: mmap.mmap | None = None  # being filled
        self._fill = 0
        # A first block ending on an alignment boundary makes every later block start on
        # one: only this short head (and the final tail) then goes through the page cache.
        self._capacity = (-start) % ALIGN or BLOCK_SIZE
        self._in_flight: mmap.mmap | None = None  # being written and hashed by ``_jobs``
        self._in_flight_offset = start
        self._jobs: list[concurrent.futures.Future[None]] = []
        self._failed_at: int | None = None  # offset of a block whose write failed

    async def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._end_limit is not None and self.size + self._fill + len(chunk) > self._end_limit:
            raise LimitExceeded
        view = memoryview(chunk)
        while view:
            if self._block is None:
                self._block = self._staging.acquire()
            take = min(len(view), self._capacity - self._fill)
            self._block[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == self._capacity:
                await self._dispatch()

    async def finish(self) -> None:
        """Write what is buffered and wait until every write and hash update landed."""
        if self._fill:
            await self._dispatch()
        await self._settle()

    def discard(self) -> None:
        """Error path: wait for in-flight work (blocking, briefly), drop buffered bytes."""
        self._wait()
        self._fill = 0

    def flush_buffer(self) -> None:
        """Error path: keep every byte received so far, unhashed (the hashers are then
        stale and commit re-hashes the file), so the client may resume from the staged
        size. If a block's write failed, the file is cut back to where that block began.
        Blocks briefly; safe to call after a cancellation."""
        self._wait()
        if self._failed_at is not None:
            os.ftruncate(self.fd, self._failed_at)
            self.size, self._fill = self._failed_at, 0
        elif self._fill and self._block is not None:
            write_all(self.fd, memoryview(self._block)[: self._fill], self.size)
            self.size, self._fill = self.size + self._fill, 0

    def close(self) -> None:
        """Return the buffers to the pool (waits for in-flight work first)."""
        self._wait()
        for block in (self._block, self._in_flight):
            if block is not None:
                self._staging.release(block)
        self._block = self._in_flight = None

    async def _dispatch(self) -> None:
        await self._settle()
        assert self._block is not None
        block, length, offset = self._block, self._fill, self.size
        self.size += length
        # The block written last time is free again: it is the next one to fill.
        self._block, self._in_flight, self._in_flight_offset = self._in_flight, block, offset
        self._fill, self._capacity = 0, BLOCK_SIZE
        view = memoryview(block)[:length]
        hashers = (self.hashers or {}).values()
        executor = self._staging.executor
        write = executor.submit(write_block, self.fd, self.direct_fd, view, offset, self.writeback)
        self._jobs = [write]
        self._jobs += [executor.submit(_hash_block, hasher, view) for hasher in hashers]

    async def _settle(self) -> None:
        """Wait for the in-flight block; raise the first error of its jobs."""
        if self._jobs:
            waiting = asyncio.gather(*map(asyncio.wrap_future, self._jobs), return_exceptions=True)
            # Shielded: a cancelled request must not cancel a queued write, or the staged
            # file would get a hole; the error path waits for the jobs instead (``_wait``).
            await asyncio.shield(waiting)
            self._collect()

    def _wait(self) -> None:
        concurrent.futures.wait(self._jobs)
        # A failure is recorded in ``_failed_at``; the caller is already failing.
        with contextlib.suppress(Exception):
            self._collect()

    def _collect(self) -> None:
        jobs, self._jobs = self._jobs, []
        for job in jobs:
            error = job.exception()
            if error is not None:
                self._failed_at = self._in_flight_offset
                raise error


def hash_file(fd: int, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of a whole file under each algorithm (blocking: run it in a thread)."""
    hashers = {alg: new_hasher(alg) for alg in algorithms}
    offset = 0
    while block := os.pread(fd, BLOCK_SIZE, offset):
        for hasher in hashers.values():
            hasher.update(block)
        offset += len(block)
    return {alg: hasher.hexdigest() for alg, hasher in hashers.items()}
