"""Registry garbage collection: mark from the database, then sweep through a deleter.

docs/architecture.md#garbage-collection: decide from the reference tables, never by walking storage.
The plan (`GcPlan`) lists blobs no remaining manifest uses whose grace period (the current
`gc_grace_seconds` after their last reference) is over, repository links whose blob or stream is
gone, and uploads idle longer than the configured age. A dry run describes the plan; a confirmed run
sweeps in batches: flip candidates to `deleting` and commit (`GcStore.mark_deleting`), delete the
bytes, then drop the rows. Blobs a previous run left in `deleting` (crash, or another replica
mid-sweep) are finished first; deleting bytes and rows is idempotent, so two replicas may overlap,
and a run killed anywhere leaves only `deleting` rows whose bytes may or may not be gone, which the
next run finishes: nothing referenced is lost, nothing is left without a row. Each batch's bytes go
in one `BlobStore.delete_many` call (one `DeleteObjects` per 1,000 keys on object storage).
Unfinished multipart uploads the store holds (a process killed while streaming to object storage)
are aborted once older than `upload_max_age_seconds`.
Prune runs whose images used a reclaimed blob become irreversible.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from imageregistry.content.digest import Digest
from imageregistry.metadata.prune_records import (
    AbandonedUpload,
    BlobCandidate,
    HeldBlobs,
    StaleLink,
)
from imageregistry.prune.pending import stale_writes
from imageregistry.storage.driver import PendingWrite, StoredUpload
from imageregistry.storage.errors import UploadNotFound


@dataclass(frozen=True)
class GcResult:
    """A dry run's plan or a confirmed run's outcome (same shape, same printing)."""

    dry_run: bool
    blobs: tuple[BlobCandidate, ...]
    stale_links: tuple[StaleLink, ...] = ()
    uploads: tuple[AbandonedUpload, ...] = ()
    irreversible_runs: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = field(default=())  # (what, error)
    held: HeldBlobs = field(default_factory=HeldBlobs)
    pending_writes: tuple[PendingWrite, ...] = ()  # multipart uploads older than the max age

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blobs)


class GcStore(Protocol):
    """The database side of GC (`metadata.gc_queries.SqlGcStore`)."""

    def candidates(self, now: datetime) -> list[BlobCandidate]: ...
    def held(self, now: datetime) -> HeldBlobs: ...
    def unfinished(self) -> list[BlobCandidate]: ...
    def mark_deleting(self, now: datetime, limit: int) -> list[BlobCandidate]: ...
    def forget_blobs(self, digests: Sequence[str], now: datetime) -> list[str]: ...
    def runs_affected(self, digests: Sequence[str]) -> list[str]: ...
    def stale_links(self) -> list[StaleLink]: ...
    def remove_stale_links(self, links: Sequence[StaleLink]) -> int: ...
    def abandoned_uploads(self, now: datetime, max_age: timedelta) -> list[AbandonedUpload]: ...
    def known_uploads(self) -> set[str]: ...
    def forget_upload(self, upload_id: str, cutoff: datetime) -> None: ...


class BlobDeleter(Protocol):
    async def delete_blobs(self, digests: Sequence[str]) -> None:
        """Delete the blobs' bytes (absent bytes are not an error); raise if any failed."""


class UploadStore(Protocol):
    """The part of `BlobStore` abandoned-upload cleanup needs."""

    async def cancel_upload(self, upload_id: str) -> None: ...
    def iter_uploads(self) -> AsyncIterator[StoredUpload]: ...
    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]: ...
    async def abort_pending_write(self, write: PendingWrite) -> None: ...


class ByteDeleter(Protocol):
    async def delete_many(self, digests: Sequence[Digest]) -> None: ...


class StoreBlobDeleter:
    """Deletes bytes from a blob store, a batch per call."""

    def __init__(self, store: ByteDeleter) -> None:
        self._store = store

    async def delete_blobs(self, digests: Sequence[str]) -> None:
        await self._store.delete_many([Digest.parse(digest) for digest in digests])


class DescribingBlobDeleter:
    """Dry run: records what would be deleted."""

    def __init__(self) -> None:
        self.described: list[str] = []

    async def delete_blobs(self, digests: Sequence[str]) -> None:
        self.described.extend(digests)


@dataclass(frozen=True)
class GcSettings:
    upload_max_age: timedelta
    # `gc_grace_seconds`: an unreferenced blob last referenced less than this ago is kept.
    blob_grace: timedelta = timedelta(hours=1)
    # Bytes the database does not know are reported only when older than this.
    reconcile_grace: timedelta = timedelta(days=1)
    batch: int = 500


Progress = Callable[[str], None]


async def _abandoned(
    store: GcStore, uploads: UploadStore, now: datetime, max_age: timedelta
) -> list[AbandonedUpload]:
    found = await asyncio.to_thread(store.abandoned_uploads, now, max_age)
    known = await asyncio.to_thread(store.known_uploads)
    listed = {u.upload_id for u in found}
    async for staged in uploads.iter_uploads():
        if staged.upload_id in known or staged.upload_id in listed:
            continue
        if staged.modified < now - max_age:
            found.append(AbandonedUpload(staged.upload_id, "", staged.modified))
    return sorted(found, key=lambda u: u.upload_id)


async def _stale_writes(
    uploads: UploadStore, cutoff: datetime, failed: list[tuple[str, str]]
) -> list[PendingWrite]:
    """Multipart uploads started before `cutoff` and not part of a live session
    (`prune.pending`); a store that cannot list them is reported in `failed`, and the
    rest of GC goes on."""
    try:
        return await stale_writes(uploads, cutoff)
    except Exception as exc:
        failed.append(("multipart uploads", str(exc) or repr(exc)))
        return []


async def plan_gc(
    store: GcStore, uploads: UploadStore, now: datetime, settings: GcSettings
) -> GcResult:
    """The dry run: what a confirmed run would do now."""
    # Independent reads: run them side by side (SQLite and psycopg release the GIL).
    failed: list[tuple[str, str]] = []
    blobs, links, abandoned, writes = await asyncio.gather(
        asyncio.to_thread(store.candidates, now),
        asyncio.to_thread(store.stale_links),
        _abandoned(store, uploads, now, settings.upload_max_age),
        _stale_writes(uploads, now - settings.upload_max_age, failed),
    )
    describer = DescribingBlobDeleter()
    await describer.delete_blobs([blob.digest for blob in blobs])
    runs = await asyncio.to_thread(store.runs_affected, describer.described)
    held = await asyncio.to_thread(store.held, now)
    return GcResult(
        True,
        tuple(blobs),
        tuple(links),
        tuple(abandoned),
        tuple(runs),
        tuple(failed),
        held=held,
        pending_writes=tuple(writes),
    )


async def _sweep_batch(
    store: GcStore,
    deleter: BlobDeleter,
    batch: Sequence[BlobCandidate],
    now: datetime,
    failed: list[tuple[str, str]],
) -> tuple[list[BlobCandidate], list[str]]:
    try:
        await deleter.delete_blobs([blob.digest for blob in batch])
    except Exception as exc:  # leave the batch `deleting`; the next run retries it
        error = str(exc) or repr(exc)
        failed.extend((blob.digest, error) for blob in batch)
        return [], []
    done = list(batch)
    runs = await asyncio.to_thread(store.forget_blobs, [b.digest for b in done], now)
    return done, runs


async def _sweep_uploads(
    store: GcStore,
    uploads: UploadStore,
    now: datetime,
    settings: GcSettings,
    failed: list[tuple[str, str]],
) -> list[AbandonedUpload]:
    removed: list[AbandonedUpload] = []
    cutoff = now - settings.upload_max_age
    for upload in await _abandoned(store, uploads, now, settings.upload_max_age):
        try:
            with contextlib.suppress(UploadNotFound):
                await uploads.cancel_upload(upload.upload_id)
            await asyncio.to_thread(store.forget_upload, upload.upload_id, cutoff)
        except Exception as exc:
            failed.append((f"upload {upload.upload_id}", str(exc) or repr(exc)))
            continue
        removed.append(upload)
    return removed


async def _abort_writes(
    uploads: UploadStore, cutoff: datetime, failed: list[tuple[str, str]]
) -> list[PendingWrite]:
    aborted: list[PendingWrite] = []
    for write in await _stale_writes(uploads, cutoff, failed):
        try:
            await uploads.abort_pending_write(write)
        except Exception as exc:
            failed.append((f"multipart upload {write.key}", str(exc) or repr(exc)))
            continue
        aborted.append(write)
    return aborted


async def run_gc(
    store: GcStore,
    deleter: BlobDeleter,
    uploads: UploadStore,
    now: datetime,
    settings: GcSettings,
    progress: Progress | None = None,
) -> GcResult:
    """A confirmed run: sweep unfinished deletions, then mark and sweep batch by batch."""
    deleted: list[BlobCandidate] = []
    failed: list[tuple[str, str]] = []
    irreversible: list[str] = []
    batch = await asyncio.to_thread(store.unfinished)
    while True:
        if batch:
            done, runs = await _sweep_batch(store, deleter, batch, now, failed)
            deleted += done
            irreversible += runs
            if progress:
                progress(f"deleted {len(deleted)} blobs")
        batch = await asyncio.to_thread(store.mark_deleting, now, settings.batch)
        if not batch:
            break
    links = await asyncio.to_thread(store.stale_links)
    await asyncio.to_thread(store.remove_stale_links, links)
    abandoned = await _sweep_uploads(store, uploads, now, settings, failed)
    writes = await _abort_writes(uploads, now - settings.upload_max_age, failed)
    held = await asyncio.to_thread(store.held, now)
    return GcResult(
        False,
        tuple(deleted),
        tuple(links),
        tuple(abandoned),
        tuple(irreversible),
        tuple(failed),
        held,
        tuple(writes),
    )
