"""Which unfinished multipart uploads GC and the reconciler may abort (`prune.pending`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from imageregistry.prune.pending import stale_writes
from imageregistry.storage.driver import PendingWrite, StoredUpload

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LONG_AGO = datetime(2010, 11, 10, 20, 48, 33, tzinfo=UTC)  # what moto reports for every upload


class Bucket:
    def __init__(self, writes: list[PendingWrite], sessions: list[StoredUpload]) -> None:
        self.writes, self.sessions = writes, sessions

    async def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        for write in self.writes:
            yield write

    async def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        for session in self.sessions:
            yield session


def test_a_write_of_a_live_session_is_kept_whatever_its_start_time() -> None:
    live = PendingWrite("uploads/live/data/00000000000000000000", "m1", LONG_AGO)
    dead = PendingWrite("uploads/dead/data/00000000000000000000", "m2", LONG_AGO)
    gone = PendingWrite("uploads/gone/data/00000000000000000000", "m3", LONG_AGO)
    commit = PendingWrite("blobs/sha256/ab/abcd", "m4", LONG_AGO)
    young = PendingWrite("blobs/sha256/cd/cdef", "m5", NOW - timedelta(minutes=1))
    bucket = Bucket(
        [live, dead, gone, commit, young],
        [
            StoredUpload("live", 10, NOW - timedelta(seconds=5)),
            StoredUpload("dead", 10, NOW - timedelta(days=2)),
        ],
    )
    stale = asyncio.run(stale_writes(bucket, NOW - timedelta(days=1)))
    assert stale == [commit, dead, gone]
