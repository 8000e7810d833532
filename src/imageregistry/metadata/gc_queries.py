"""SQL for registry garbage collection: what is unreferenced, and the mark/forget steps.

A blob is a candidate when its grace period is over — it was last referenced (uploaded,
mounted, linked, or used by a pushed manifest) longer than the *current* grace setting
ago, so changing `gc_grace_seconds` applies to every stored blob — and no remaining
manifest uses it: not as a layer or config (`manifest_blobs`), not as the manifest's own
bytes (`manifests`), not as a manifest an index lists (`manifest_children`). Marking runs
in a write transaction: select candidates (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so
replicas share the work and never wait on a push holding the row), re-check references
with a fresh statement now that the rows are locked (a READ COMMITTED subquery only sees
references committed before the statement began; a push that committed in between is seen
by the re-check), then flip the survivors to `deleting`. Reference-creating paths lock
the same row and refuse `deleting`, so after the commit nothing can start using these
blobs. Blobs marked `corrupt` by verify are collected like present ones once nothing uses
them.

`SqlBlobChecks` serves `ac adm registry verify`: blob rows in digest order after a
continue token, and the compare-and-set marking of corrupt (or repaired) blobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, func, select, update

from imageregistry.metadata.db import Database, as_utc
from imageregistry.metadata.prune_records import (
    AbandonedUpload,
    BlobCandidate,
    HeldBlobs,
    StaleLink,
)
from imageregistry.metadata.prune_runs import DONE, mark_irreversible
from imageregistry.metadata.registry import CORRUPT, DELETING, PRESENT
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    prune_runs,
    repositories,
    repository_blobs,
    uploads,
)

_COLLECTABLE = (PRESENT, CORRUPT)


def _referenced(digest: Any) -> ColumnElement[bool]:
    return (
        exists().where(manifest_blobs.c.blob_digest == digest)
        | exists().where(manifests.c.digest == digest)
        | exists().where(manifest_children.c.child_digest == digest)
    )


def _candidate_filter(cutoff: datetime) -> ColumnElement[bool]:
    """Collectable, last referenced at or before `cutoff` (now - grace), used by nothing."""
    return and_(
        blobs.c.state.in_(_COLLECTABLE), blobs.c.referenced <= cutoff, ~_referenced(blobs.c.digest)
    )


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqlGcStore:
    """The GC steps over the metadata database (implements `prune.gc.GcStore`)."""

    def __init__(self, db: Database, grace: timedelta) -> None:
        self._db = db
        self._grace = grace  # the current `gc_grace_seconds`, applied at every decision

    def candidates(self, now: datetime) -> list[BlobCandidate]:
        """Dry-run view: unreferenced blobs past their grace, plus unfinished deletions."""
        query = (
            select(blobs.c.digest, blobs.c.size)
            .where(_candidate_filter(now - self._grace) | (blobs.c.state == DELETING))
            .order_by(blobs.c.digest)
        )
        with self._db.read() as conn:
            return [BlobCandidate(d, int(s)) for d, s in conn.execute(query)]

    def held(self, now: datetime) -> HeldBlobs:
        """Unreferenced blobs still inside their grace period (reported, never deleted)."""
        query = select(func.count(), func.sum(blobs.c.size), func.max(blobs.c.referenced)).where(
            blobs.c.state.in_(_COLLECTABLE),
            blobs.c.referenced > now - self._grace,
            ~_referenced(blobs.c.digest),
        )
        with self._db.read() as conn:
            count, size, last = conn.execute(query).one()
        until = as_utc(last) + self._grace if last else None
        return HeldBlobs(int(count or 0), int(size or 0), until)

    def unfinished(self) -> list[BlobCandidate]:
        """Blobs a crashed or concurrent GC flipped to `deleting` (safe to finish)."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(blobs.c.digest, blobs.c.size).where(blobs.c.state == DELETING)
            )
            return [BlobCandidate(d, int(s)) for d, s in rows]

    def mark_deleting(self, now: datetime, limit: int) -> list[BlobCandidate]:
        """Flip up to `limit` candidates to `deleting` and commit; return them."""
        cutoff = now - self._grace
        query = select(blobs.c.digest, blobs.c.size).where(_candidate_filter(cutoff)).limit(limit)
        if not self._db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=blobs)

        def work(conn: Connection) -> dict[str, int]:
            rows = {d: int(s) for d, s in conn.execute(query)}
            if not rows:
                return {}
            recheck = select(blobs.c.digest).where(
                blobs.c.digest.in_(list(rows)), _referenced(blobs.c.digest)
            )
            for digest in conn.execute(recheck).scalars():
                rows.pop(digest, None)
            if rows:
                conn.execute(
                    update(blobs).where(blobs.c.digest.in_(list(rows))).values(state=DELETING)
                )
            return rows

        rows = self._db.transaction(work)
        return [BlobCandidate(d, s) for d, s in sorted(rows.items())]

    def forget_blobs(self, digests: Sequence[str], now: datetime) -> list[str]:
        """Drop rows and links of deleted blobs; return prune runs made irreversible."""

        def work(conn: Connection) -> list[str]:
            for chunk in _chunks(sorted(digests)):
                # Lock the rows in digest order first, as pushes do (`lock_present_blobs`):
                # a DELETE alone locks them in the order it finds them on disk, and a push
                # holding two of them in digest order would deadlock with it.
                conn.execute(
                    select(blobs.c.digest)
                    .where(blobs.c.digest.in_(chunk))
                    .order_by(blobs.c.digest)
                    .with_for_update()
                ).all()
                conn.execute(delete(repository_blobs).where(repository_blobs.c.digest.in_(chunk)))
                conn.execute(
                    delete(blobs).where(blobs.c.digest.in_(chunk), blobs.c.state == DELETING)
                )
            return mark_irreversible(conn, digests, now)

        return self._db.transaction(work)

    def runs_affected(self, digests: Iterable[str]) -> list[str]:
        """Prune runs a sweep of `digests` would make irreversible (for the dry run)."""
        gone = set(digests)
        with self._db.read() as conn:
            rows = conn.execute(
                select(prune_runs.c.id, prune_runs.c.removed).where(prune_runs.c.state == DONE)
            ).all()
        return [
            r for r, removed in rows if gone.intersection((removed or {}).get("blobDigests", ()))
        ]

    def _stale_link_query(self) -> Any:
        no_blob = ~exists().where(blobs.c.digest == repository_blobs.c.digest)
        no_repo = repositories.c.id.is_(None)  # the outer join found no stream
        return (
            select(repository_blobs.c.repository_id, repository_blobs.c.digest)
            .add_columns(repositories.c.namespace, repositories.c.name)
            .select_from(
                repository_blobs.outerjoin(
                    repositories, repositories.c.id == repository_blobs.c.repository_id
                )
            )
            .where(no_blob | no_repo)
        )

    def stale_links(self) -> list[StaleLink]:
        with self._db.read() as conn:
            rows = conn.execute(self._stale_link_query())
            return [StaleLink(int(r), d, ns or "", n or "") for r, d, ns, n in rows]

    def remove_stale_links(self, links: Sequence[StaleLink]) -> int:
        removed = 0
        with self._db.write() as conn:
            for link in links:
                result = conn.execute(
                    delete(repository_blobs).where(
                        repository_blobs.c.repository_id == link.repository_id,
                        repository_blobs.c.digest == link.digest,
                        ~exists().where(blobs.c.digest == repository_blobs.c.digest)
                        | ~exists().where(repositories.c.id == repository_blobs.c.repository_id),
                    )
                )
                removed += result.rowcount
        return removed

    def abandoned_uploads(self, now: datetime, max_age: timedelta) -> list[AbandonedUpload]:
        cutoff = now - max_age
        query = select(uploads.c.id, uploads.c.namespace, uploads.c.name, uploads.c.updated).where(
            uploads.c.updated < cutoff
        )
        with self._db.read() as conn:
            return [
                AbandonedUpload(i, f"{ns}/{n}", as_utc(u)) for i, ns, n, u in conn.execute(query)
            ]

    def known_uploads(self) -> set[str]:
        with self._db.read() as conn:
            return set(conn.execute(select(uploads.c.id)).scalars())

    def forget_upload(self, upload_id: str, cutoff: datetime) -> None:
        with self._db.write() as conn:
            conn.execute(
                delete(uploads).where(uploads.c.id == upload_id, uploads.c.updated < cutoff)
            )

    def known_blobs(self, digests: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.read() as conn:
            for chunk in _chunks(digests):
                found.update(
                    conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(chunk))).scalars()
                )
        return found


@dataclass(frozen=True, slots=True)
class RecordedBlob:
    """A blob row as verify sees it."""

    digest: str
    size: int
    corrupt: bool


class SqlBlobChecks:
    """Blob rows for verify (implements `prune.verify.BlobChecks`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def page(self, after: str, limit: int) -> list[RecordedBlob]:
        """Up to `limit` present or corrupt blobs whose digest sorts after `after`."""
        query = (
            select(blobs.c.digest, blobs.c.size, blobs.c.state)
            .where(blobs.c.state.in_(_COLLECTABLE), blobs.c.digest > after)
            .order_by(blobs.c.digest)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [RecordedBlob(d, int(s), st == CORRUPT) for d, s, st in conn.execute(query)]

    def totals(self) -> tuple[int, int]:
        """(count, bytes) of the blobs verify checks, for progress."""
        query = select(func.count(), func.sum(blobs.c.size)).where(blobs.c.state.in_(_COLLECTABLE))
        with self._db.read() as conn:
            count, size = conn.execute(query).one()
        return int(count or 0), int(size or 0)

    def set_corrupt(self, digest: str, size: int, corrupt: bool) -> bool:
        """Flip `digest` (still of `size` recorded bytes) between present and corrupt;
        True if this call changed it (not deleted, repaired or re-marked meanwhile)."""
        old, new = (PRESENT, CORRUPT) if corrupt else (CORRUPT, PRESENT)
        with self._db.write() as conn:
            result = conn.execute(
                update(blobs)
                .where(blobs.c.digest == digest, blobs.c.size == size, blobs.c.state == old)
                .values(state=new)
            )
        return bool(result.rowcount)
