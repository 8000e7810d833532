"""The staging writer's own guarantees, on the real filesystem under the test's tmp dir:
the page-cache fallback when the kernel refuses a direct write, and what an interrupted or
failing stream leaves in the staged file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.storage.staging import (
    ALIGN,
    BLOCK_SIZE,
    StagedAppender,
    Staging,
    open_direct,
    write_block,
)


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[tuple[Path, int, int | None]]:
    path = tmp_path / "data"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    direct_fd = open_direct(str(path))
    yield path, fd, direct_fd
    if direct_fd is not None:
        os.close(direct_fd)
    os.close(fd)


def test_direct_write_refused_for_an_unaligned_buffer_falls_back(
    staged: tuple[Path, int, int | None],
) -> None:
    path, fd, direct_fd = staged
    if direct_fd is None:
        pytest.skip("this filesystem has no O_DIRECT (the buffered path is the only one)")
    # A slice of a bytes object starts at an odd address: O_DIRECT refuses it (EINVAL).
    data = os.urandom(3 * ALIGN + 1)
    write_block(fd, direct_fd, memoryview(data)[1:], 0, writeback=True)
    assert path.read_bytes() == data[1:]


def test_appender_hashes_what_it_writes(staged: tuple[Path, int, int | None]) -> None:
    path, fd, direct_fd = staged
    data = os.urandom(2 * BLOCK_SIZE + 777)
    hasher = hashlib.sha256()

    async def run() -> int:
        appender = StagedAppender(Staging(), fd, 0, None, {"sha256": hasher}, direct_fd=direct_fd)
        try:
            for i in range(0, len(data), 100_000):
                await appender.feed(data[i : i + 100_000])
            await appender.finish()
        finally:
            appender.close()
        return appender.size

    assert asyncio.run(run()) == len(data)
    assert path.read_bytes() == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_interrupted_stream_keeps_every_received_byte(
    staged: tuple[Path, int, int | None],
) -> None:
    path, fd, direct_fd = staged
    data = os.urandom(BLOCK_SIZE + 5000)

    async def run() -> StagedAppender:
        appender = StagedAppender(Staging(), fd, 0, None, None, direct_fd=direct_fd)
        await appender.feed(data[:BLOCK_SIZE])  # dispatched to a worker thread
        await appender.feed(data[BLOCK_SIZE:])  # still buffered
        return appender

    appender = asyncio.run(run())
    appender.flush_buffer()  # what the driver does when the client goes away
    appender.close()
    assert appender.size == len(data)
    assert path.read_bytes() == data


def test_failed_block_write_cuts_the_file_back(staged: tuple[Path, int, int | None]) -> None:
    # RLIMIT_FSIZE makes the kernel refuse writes past 3 MiB with EFBIG: a real write
    # failure in the middle of a stream. The staged file must end where the failed block
    # began, never with a hole or a partial block a client would resume after.
    path, fd, direct_fd = staged
    data = os.urandom(3 * BLOCK_SIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (BLOCK_SIZE + BLOCK_SIZE // 2, hard))
    try:

        async def run() -> StagedAppender:
            appender = StagedAppender(Staging(), fd, 0, None, None, direct_fd=direct_fd)
            with pytest.raises(OSError):
                for i in range(0, len(data), 65_536):
                    await appender.feed(data[i : i + 65_536])
                await appender.finish()
            return appender

        appender = asyncio.run(run())
        appender.flush_buffer()
        appender.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert appender.size == BLOCK_SIZE
    assert path.read_bytes() == data[:BLOCK_SIZE]
