"""Storage reconciler: bytes in the blob store that the database does not know.

docs/architecture.md#garbage-collection: GC decides from the database, so a blob whose row was
never written (a crash between publishing bytes and committing the row, or a restore of
storage from backup) is invisible to it. This pass walks the store (page by page on
object storage), reports blobs with no row that are older than a grace period
(`reconcile_grace_seconds`, a day by default: younger ones may belong to an upload whose
row is being committed right now), and deletes them only when asked (dry run default).
It also reports the store's unfinished multipart uploads started before that grace (a
process killed mid-write; GC aborts them after `upload_max_age_seconds`) and aborts them
when asked. Both are leaks, not normal garbage, so the report is worth reading either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from imageregistry.content.digest import Digest
from imageregistry.prune.pending import stale_writes
from imageregistry.storage.driver import PendingWrite, StoredBlob, StoredUpload


class KnownBlobs(Protocol):
    def known_blobs(self, digests: Sequence[str]) -> set[str]: ...


class WalkableStore(Protocol):
    def iter_blobs(self) -> AsyncIterator[StoredBlob]: ...
    async def delete_many(self, digests: Sequence[Digest]) -> None: ...
    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]: ...
    def iter_uploads(self) -> AsyncIterator[StoredUpload]: ...
    async def abort_pending_write(self, write: PendingWrite) -> None: ...


@dataclass(frozen=True)
class ReconcileResult:
    dry_run: bool
    unknown: tuple[StoredBlob, ...]
    scanned: int
    pending_writes: tuple[PendingWrite, ...] = ()

    @property
    def size(self) -> int:
        return sum(b.size for b in self.unknown)


async def reconcile(
    db: KnownBlobs, store: WalkableStore, now: datetime, grace: timedelta, dry_run: bool
) -> ReconcileResult:
    cutoff = now - grace
    old: list[StoredBlob] = []
    scanned = 0
    async for blob in store.iter_blobs():
        scanned += 1
        if blob.modified < cutoff:
            old.append(blob)
    known = await asyncio.to_thread(db.known_blobs, [str(b.digest) for b in old])
    unknown = [b for b in old if str(b.digest) not in known]
    if not dry_run and unknown:
        # Check again right before deleting: a row may have been committed meanwhile.
        known = await asyncio.to_thread(db.known_blobs, [str(b.digest) for b in unknown])
        unknown = [b for b in unknown if str(b.digest) not in known]
        await store.delete_many([blob.digest for blob in unknown])  # DeleteObjects on S3
    unknown.sort(key=lambda b: str(b.digest))
    writes = await stale_writes(store, cutoff)
    if not dry_run:
        for write in writes:
            await store.abort_pending_write(write)
    return ReconcileResult(dry_run, tuple(unknown), scanned, tuple(writes))
