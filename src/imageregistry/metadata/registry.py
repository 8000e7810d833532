"""Data-plane SQL: repositories, blob links, upload sessions, tags and the catalog.

Every method is one transaction. Reference-creating paths (upload commit, mount, and the
manifest push in `registry_manifests`) lock the blob row, refuse a blob GC has flipped to
`deleting` (`BlobDeleting` → the client re-uploads), and move the blob's `referenced`
time forward, so a blob that was just referenced cannot be collected before the grace
period GC applies to that time ends (docs/architecture.md#garbage-collection). A repository
may read only the blobs linked to it (`repository_blobs`). Repositories are ImageStreams:
creating one, or changing its tags, records a change so watches and resourceVersions
follow.

A blob row is `present`, `deleting` (GC) or `corrupt` (`ac adm registry verify --confirm`
found its stored bytes damaged). A corrupt blob is not served and cannot be referenced;
the next upload of the same digest replaces the stored bytes and flips it back to
`present` (`record_blob(repaired=True)`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imageregistry import apigroups
from imageregistry.metadata.db import Database, as_utc, record_change
from imageregistry.metadata.namespaces import create_namespace, namespace_exists
from imageregistry.metadata.outbox import Emit
from imageregistry.metadata.quota import check_new_stream
from imageregistry.metadata.tables import (
    blobs,
    repositories,
    repository_blobs,
    tag_events,
    uploads,
)
from imageregistry.metadata.tag_policies import check_tag_removal

IMAGESTREAMS = f"imagestreams.{apigroups.IMAGE}"
IMAGES = f"images.{apigroups.IMAGE}"
PRESENT, DELETING, CORRUPT = "present", "deleting", "corrupt"


class MetadataError(Exception):
    """Base of the data plane's domain errors (mapped to OCI codes by the HTTP layer)."""


class NameUnknown(MetadataError):
    """The repository (image stream) is not known."""


class NamespaceMissing(NameUnknown):
    """The namespace does not exist and the caller may not create it."""


class BlobUnknown(MetadataError):
    """The blob is not linked to the repository."""


class BlobDeleting(BlobUnknown):
    """GC is deleting the blob; the client must upload it again."""


class BlobCorrupt(BlobDeleting):
    """The stored bytes are known to be damaged; uploading the blob again repairs them."""

    def __init__(self, digest: str) -> None:
        super().__init__(
            f"blob {digest} is corrupt in the registry's storage; push it again to repair it"
        )


class UploadUnknown(MetadataError):
    """No such upload session in this repository."""


class UploadLimitReached(MetadataError):
    """An identity has as many upload sessions open, or bytes staged, as it may."""


@dataclass(frozen=True, slots=True)
class RepoKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    namespace: str
    name: str
    created: datetime
    owner: str = ""


def _lock_owner(conn: Connection, owner: str) -> None:
    """Serialize the upload-cap checks of one identity. SQLite's write transaction
    already does (BEGIN IMMEDIATE); PostgreSQL takes a transaction-scoped advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:o))"), {"o": f"upload:{owner}"})


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """INSERT that silently skips a primary-key/unique conflict; True if a row was added."""
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    # rowcount is -1 under psycopg when SQLAlchemy adds RETURNING; ask for a row instead.
    return conn.execute(stmt.returning(literal_column("1"))).first() is not None


def find_repository(conn: Connection, repo: RepoKey) -> int | None:
    row = conn.execute(
        select(repositories.c.id).where(
            repositories.c.namespace == repo.namespace, repositories.c.name == repo.name
        )
    ).first()
    return None if row is None else int(row.id)


def ensure_repository(conn: Connection, repo: RepoKey, now: datetime, may_create_ns: bool) -> int:
    """The repository id, creating the stream (and, if allowed, the namespace) when missing."""
    found = find_repository(conn, repo)
    if found is not None:
        return found
    if not namespace_exists(conn, repo.namespace):
        if not may_create_ns:
            raise NamespaceMissing(f"namespace {repo.namespace!r} does not exist")
        create_namespace(conn, repo.namespace, now)
    check_new_stream(conn, repo.namespace)  # count/imagestreams quotas
    values = {
        "namespace": repo.namespace,
        "name": repo.name,
        "uid": str(uuid.uuid4()),
        "resource_version": 0,
        "generation": 1,
        "created": now,
        "user_data": {},
    }
    if insert_ignore(conn, repositories, values):
        rv = record_change(conn, IMAGESTREAMS, repo.namespace, repo.name, "ADDED")
        conn.execute(
            update(repositories)
            .where(repositories.c.uid == values["uid"])
            .values(resource_version=rv)
        )
    found = find_repository(conn, repo)
    assert found is not None
    return found


def touch_repository(conn: Connection, repo_id: int, repo: RepoKey) -> None:
    """Record that the ImageStream changed (its tags); new resourceVersion."""
    rv = record_change(conn, IMAGESTREAMS, repo.namespace, repo.name, "MODIFIED")
    conn.execute(
        update(repositories).where(repositories.c.id == repo_id).values(resource_version=rv)
    )


def hold_blobs(conn: Connection, sizes: Mapping[str, int], now: datetime) -> None:
    """Create-or-lock blob rows, refuse `deleting` ones, record `now` as their last reference."""
    for digest, size in sorted(sizes.items()):  # stable lock order across pushes
        insert_ignore(
            conn,
            blobs,
            {
                "digest": digest,
                "size": size,
                "state": PRESENT,
                "referenced": now,
                "created": now,
            },
        )
    lock_present_blobs(conn, sizes.keys(), missing_ok=False)
    conn.execute(
        update(blobs)
        .where(blobs.c.digest.in_(list(sizes)), blobs.c.referenced < now)
        .values(referenced=now)
    )


def lock_present_blobs(
    conn: Connection, digests: Iterable[str], *, missing_ok: bool = True
) -> dict[str, int]:
    """Lock the blob rows (FOR UPDATE on PostgreSQL); sizes of those not being deleted."""
    wanted = sorted(set(digests))  # a stable order so concurrent lockers cannot deadlock
    if not wanted:
        return {}
    rows = conn.execute(
        select(blobs.c.digest, blobs.c.size, blobs.c.state)
        .where(blobs.c.digest.in_(wanted))
        .order_by(blobs.c.digest)
        .with_for_update()
    ).all()
    corrupt = [r.digest for r in rows if r.state == CORRUPT]
    if corrupt:
        raise BlobCorrupt(corrupt[0])
    deleting = [r.digest for r in rows if r.state != PRESENT]
    if deleting:
        raise BlobDeleting(f"blob {deleting[0]} is being garbage-collected; upload it again")
    if not missing_ok and len(rows) != len(wanted):
        raise BlobUnknown("blob row vanished")
    return {r.digest: int(r.size) for r in rows}


def link_blob(conn: Connection, repo_id: int, digest: str, now: datetime) -> None:
    insert_ignore(
        conn, repository_blobs, {"repository_id": repo_id, "digest": digest, "created": now}
    )


class RegistryMetadata:
    """Blob links, uploads, tags and catalog queries over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- repositories and namespaces ----------------------------------------------------

    def repository_exists(self, repo: RepoKey) -> bool:
        with self.db.read() as conn:
            return find_repository(conn, repo) is not None

    def check_push_target(self, repo: RepoKey, may_create_ns: bool) -> None:
        """Raise `NamespaceMissing` when a push into `repo` could never be recorded, and
        `QuotaExceeded` when it would create a stream the namespace's quota has no room
        for (decided again, under the namespace lock, when the stream is created)."""
        with self.db.read() as conn:
            if find_repository(conn, repo) is not None:
                return
            if not may_create_ns and not namespace_exists(conn, repo.namespace):
                raise NamespaceMissing(f"namespace {repo.namespace!r} does not exist")
            check_new_stream(conn, repo.namespace, lock=False)

    def list_repositories(self) -> list[str]:
        with self.db.read() as conn:
            rows = conn.execute(select(repositories.c.namespace, repositories.c.name)).all()
        return sorted(f"{r.namespace}/{r.name}" for r in rows)

    # -- blobs ----------------------------------------------------------------------------

    def blob_size(self, repo: RepoKey, digest: str) -> int:
        """Size of a blob readable in `repo` (`NameUnknown`/`BlobUnknown` otherwise)."""
        with self.db.read() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            row = conn.execute(
                select(blobs.c.size, blobs.c.state)
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .where(
                    repository_blobs.c.repository_id == repo_id,
                    blobs.c.digest == digest,
                    blobs.c.state.in_((PRESENT, CORRUPT)),
                )
            ).first()
        if row is None:
            raise BlobUnknown(f"blob {digest} unknown to repository {repo}")
        if row.state == CORRUPT:
            raise BlobCorrupt(digest)
        return int(row.size)

    def blob_state(self, digest: str) -> str | None:
        """`present`, `deleting` (a GC sweep has it), `corrupt` (verify marked the stored
        bytes; a commit of the same digest must replace them) or None (no row)."""
        with self.db.read() as conn:
            state = conn.execute(select(blobs.c.state).where(blobs.c.digest == digest)).scalar()
        return None if state is None else str(state)

    def blob_is_corrupt(self, digest: str) -> bool:
        return self.blob_state(digest) == CORRUPT

    def record_blob(
        self,
        repo: RepoKey,
        digest: str,
        size: int,
        now: datetime,
        may_create_ns: bool,
        *,
        repaired: bool = False,
        emit: Emit | None = None,
    ) -> None:
        """Link a just-committed blob to `repo` (creating the stream when needed); `emit`
        adds its event notifications in the same transaction.

        `repaired`: the commit replaced stored bytes marked corrupt, so the row is
        `present` again. Without it a corrupt row (marked while this upload ran) refuses
        the link with `BlobCorrupt`, and the client's retry repairs it.
        """

        def work(conn: Connection) -> None:
            if repaired:
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest == digest, blobs.c.state == CORRUPT)
                    .values(state=PRESENT, size=size)
                )
            repo_id = ensure_repository(conn, repo, now, may_create_ns)
            hold_blobs(conn, {digest: size}, now)
            link_blob(conn, repo_id, digest, now)
            if emit is not None:
                emit(conn)

        self.db.transaction(work)  # again from the start if it loses a deadlock

    def mount_blob(
        self,
        source: RepoKey,
        target: RepoKey,
        digest: str,
        now: datetime,
        may_create_ns: bool,
        stored_size: int | None = None,
        emit: Callable[[Connection, int], None] | None = None,
    ) -> int | None:
        """Link a blob readable in `source` to `target`; its size, or None to fall back
        (also when `stored_size`, what the store holds, is not the recorded size: the
        client then uploads the blob, which repairs the stored copy)."""

        def work(conn: Connection) -> int | None:
            source_id = find_repository(conn, source)
            if source_id is None:
                return None
            linked = conn.execute(
                select(repository_blobs.c.digest).where(
                    repository_blobs.c.repository_id == source_id,
                    repository_blobs.c.digest == digest,
                )
            ).first()
            if linked is None:
                return None
            try:
                sizes = lock_present_blobs(conn, [digest])
            except BlobDeleting:
                return None
            if digest not in sizes or stored_size not in (None, sizes[digest]):
                return None
            target_id = ensure_repository(conn, target, now, may_create_ns)
            hold_blobs(conn, sizes, now)
            link_blob(conn, target_id, digest, now)
            if emit is not None:
                emit(conn, sizes[digest])
            return sizes[digest]

        return self.db.transaction(work)  # again from the start if it loses a deadlock

    def unlink_blob(self, repo: RepoKey, digest: str, emit: Emit | None = None) -> None:
        with self.db.write() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            result = conn.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repo_id,
                    repository_blobs.c.digest == digest,
                )
            )
            if result.rowcount == 0:
                raise BlobUnknown(f"blob {digest} unknown to repository {repo}")
            if emit is not None:
                emit(conn)

    # -- uploads --------------------------------------------------------------------------

    def create_upload(
        self, upload_id: str, repo: RepoKey, now: datetime, owner: str = "", max_open: int = 0
    ) -> None:
        """Record a session of `owner`; `UploadLimitReached` when `owner` already has
        `max_open` sessions (0 = no cap)."""
        with self.db.write() as conn:
            if max_open > 0:
                _lock_owner(conn, owner)
                count = conn.execute(
                    select(func.count()).select_from(uploads).where(uploads.c.owner == owner)
                ).scalar_one()
                if count >= max_open:
                    raise UploadLimitReached(
                        f"{owner} has {count} uploads open, the most allowed "
                        "(upload_max_open_per_user); finish or cancel one first "
                        "(abandoned uploads expire after upload_max_age_seconds)"
                    )
            conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repository_id=find_repository(conn, repo),
                    namespace=repo.namespace,
                    name=repo.name,
                    created=now,
                    updated=now,
                    owner=owner,
                    staged=0,
                )
            )

    def reserve_upload_bytes(
        self, upload_id: str | None, owner: str, staged: int, wanted: int | None, max_bytes: int
    ) -> int | None:
        """Room for the next chunk (`wanted` bytes, None = unknown) of `owner`'s session
        `upload_id`, which has `staged` bytes (None: a monolithic upload, no session);
        returns the chunk's byte limit (None = no cap). `UploadLimitReached` when it does
        not fit under `max_bytes` (0 = no cap) with everything else `owner` has staged.

        The room is reserved on the session row until `touch_upload` or `settle_upload`
        records what was really staged, so parallel chunks of one identity share one cap.
        """
        if max_bytes <= 0:
            return wanted
        if upload_id is None:  # nothing to reserve on: a read suffices
            with self.db.read() as conn:
                return self._room(conn, None, owner, staged, wanted, max_bytes)
        with self.db.write() as conn:
            _lock_owner(conn, owner)
            limit = self._room(conn, upload_id, owner, staged, wanted, max_bytes)
            conn.execute(
                update(uploads).where(uploads.c.id == upload_id).values(staged=staged + limit)
            )
            return limit

    @staticmethod
    def _room(
        conn: Connection,
        upload_id: str | None,
        owner: str,
        staged: int,
        wanted: int | None,
        max_bytes: int,
    ) -> int:
        used_query = select(func.coalesce(func.sum(uploads.c.staged), 0)).where(
            uploads.c.owner == owner
        )
        if upload_id is not None:
            used_query = used_query.where(uploads.c.id != upload_id)
        used = int(conn.execute(used_query).scalar_one()) + staged
        room = max_bytes - used
        if (wanted is None and room <= 0) or (wanted is not None and wanted > max(room, 0)):
            raise UploadLimitReached(
                f"{owner} has {used} bytes staged in unfinished uploads; "
                f"{'this chunk' if wanted else 'more'} would pass the limit of "
                f"{max_bytes} (upload_max_staged_bytes_per_user); finish or cancel "
                "uploads first"
            )
        return room if wanted is None else wanted

    def settle_upload(self, upload_id: str, staged: int) -> None:
        """Record what a session really has staged (after a chunk failed)."""
        with self.db.write() as conn:
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(staged=staged))

    def find_upload(self, upload_id: str, repo: RepoKey) -> UploadSession:
        """The session, which must belong to `repo` (`UploadUnknown` otherwise)."""
        with self.db.read() as conn:
            row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        if row is None or (row.namespace, row.name) != (repo.namespace, repo.name):
            raise UploadUnknown(f"upload {upload_id[:80]!r} unknown to repository {repo}")
        return UploadSession(row.id, row.namespace, row.name, as_utc(row.created), row.owner)

    def touch_upload(self, upload_id: str, now: datetime, staged: int | None = None) -> None:
        """Mark the session active (and record its staged bytes); `UploadUnknown` if it
        was cancelled meanwhile."""
        values: dict[str, Any] = {"updated": now}
        if staged is not None:
            values["staged"] = staged
        with self.db.write() as conn:
            result = conn.execute(update(uploads).where(uploads.c.id == upload_id).values(values))
        if result.rowcount == 0:
            raise UploadUnknown(f"upload {upload_id[:80]!r} was cancelled")

    def delete_upload(self, upload_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    # -- tags -----------------------------------------------------------------------------

    def list_tags(self, repo: RepoKey) -> list[str]:
        with self.db.read() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            rows = conn.execute(
                select(tag_events.c.tag).where(tag_events.c.repository_id == repo_id).distinct()
            ).all()
        # Sorted in Python: database collations differ (PostgreSQL locales vs bytes).
        return sorted(r.tag for r in rows)

    def resolve_tag(self, repo: RepoKey, tag: str) -> str | None:
        with self.db.read() as conn:
            return current_tag_digest(conn, repo, tag)

    def delete_tag(self, repo: RepoKey, tag: str, emit: Emit | None = None) -> None:
        """Remove a tag and its history (ImageStreamTag delete); `emit` adds its event
        notification in the same transaction."""
        with self.db.write() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            if current_tag_digest(conn, repo, tag) is not None:
                check_tag_removal(conn, repo.namespace, repo.name, tag)  # ImageTagPolicy
            result = conn.execute(
                delete(tag_events).where(
                    tag_events.c.repository_id == repo_id, tag_events.c.tag == tag
                )
            )
            if result.rowcount == 0:
                raise TagUnknown(f"tag {tag!r} not found in {repo}")
            touch_repository(conn, repo_id, repo)
            if emit is not None:
                emit(conn)


class TagUnknown(MetadataError):
    """The tag does not exist in the repository."""


def current_tag_digest(conn: Connection, repo: RepoKey, tag: str) -> str | None:
    """items[0] of the tag: its newest event (raises `NameUnknown` for unknown repos)."""
    repo_id = find_repository(conn, repo)
    if repo_id is None:
        raise NameUnknown(f"repository {repo} not found")
    newest = (
        select(func.max(tag_events.c.id))
        .where(tag_events.c.repository_id == repo_id, tag_events.c.tag == tag)
        .scalar_subquery()
    )
    row = conn.execute(select(tag_events.c.digest).where(tag_events.c.id == newest)).first()
    return None if row is None else str(row.digest)
