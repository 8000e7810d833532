"""Data-plane SQL for manifests: record a push, serve by tag or digest, delete, referrers.

A push records, in one transaction, the Image (`manifests` row plus its blob and child edges), the
link from the repository to it, and for a push by tag a prepended tag event — unless the tag already
points at that image (docs/behaviour.md#image-api-resources). The blobs a manifest references must
be linked to the repository and not being deleted by GC; children of an index must be manifests of
the repository (`ManifestBlobUnknown` otherwise), and every descriptor must state the stored size
(`ManifestSizeMismatch`). Manifests are served only from these rows.

DELETE by digest (`delete_manifest`, the one place an image leaves a stream by digest)
removes the image from the stream: its link and every tag history item of the stream that
points at it, and the Image object itself when nothing else needs it any more. It is
recorded as a prune run, so `ac adm prune images --undo RUN` restores it until registry
GC reclaims its blobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, select, update

from imageregistry.metadata.db import Database, as_utc, record_change
from imageregistry.metadata.outbox import Emit
from imageregistry.metadata.prune_queries import capture_image, row_to_json, undo_record
from imageregistry.metadata.prune_runs import new_run_id, record_run
from imageregistry.metadata.quota import LimitsCache, check_push
from imageregistry.metadata.registry import (
    IMAGES,
    BlobDeleting,
    MetadataError,
    NameUnknown,
    RepoKey,
    current_tag_digest,
    ensure_repository,
    find_repository,
    hold_blobs,
    insert_ignore,
    lock_present_blobs,
    touch_repository,
)
from imageregistry.metadata.signatures import (
    PushedSignatures,
    drop_pushed_signatures,
    record_pushed_signatures,
)
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_blobs,
    repository_manifests,
    tag_events,
)
from imageregistry.metadata.tag_policies import check_image_removal, check_move

PULL_RECORD_INTERVAL = timedelta(minutes=1)


class ManifestUnknown(MetadataError):
    """No such manifest (or tag) in the repository."""


class ManifestBlobUnknown(MetadataError):
    """The manifest references blobs or manifests the repository does not have."""

    def __init__(self, digests: list[str]) -> None:
        super().__init__(
            "manifest references content unknown to this repository: " + ", ".join(digests[:10])
        )
        self.digests = digests


class ManifestSizeMismatch(MetadataError):
    """A descriptor's size differs from the stored blob's: clients would refuse the blob,
    and usage reports and pruning decisions would count the wrong bytes."""


@dataclass(frozen=True, slots=True)
class BlobRef:
    position: int  # -1 = config
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class ChildRef:
    position: int
    digest: str
    size: int
    media_type: str
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class NewManifest:
    digest: str
    media_type: str
    content: bytes
    created: datetime
    blobs: tuple[BlobRef, ...] = ()
    children: tuple[ChildRef, ...] = ()
    config_digest: str | None = None
    artifact_type: str | None = None
    subject_digest: str | None = None
    image_metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    storage_size: int = 0
    layer_count: int = 0
    top_layer: str | None = None


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes
    last_pulled: datetime | None


@dataclass(frozen=True, slots=True)
class DeletedManifest:
    """What a DELETE by digest removed, and the prune run that can restore it."""

    run_id: str
    digest: str
    tags: tuple[str, ...]  # tags of the stream that had the image in their history
    tag_items: int
    image_deleted: bool  # the Image object went too (no other stream or index needed it)


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    content: bytes


class ManifestMetadata:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.limits = LimitsCache()  # this process's parsed quota and limit objects

    def record(
        self,
        repo: RepoKey,
        new: NewManifest,
        tag: str | None,
        now: datetime,
        may_create_ns: bool,
        signatures: PushedSignatures | None = None,
        emit: Emit | None = None,
    ) -> None:
        """Record a push; `signatures` (cosign signatures the manifest carries) are listed on
        the image they sign in the same transaction, or refuse the whole push. `emit` adds
        the push's event notifications in the same transaction."""

        def work(conn: Connection) -> None:
            # Quotas and limits first: their namespace lock precedes any blob row lock.
            sizes = {b.digest: b.size for b in new.blobs}
            check_push(
                conn,
                repo.namespace,
                repo.name,
                new.digest,
                sizes,
                new.storage_size,
                tag,
                self.limits,
            )
            repo_id = ensure_repository(conn, repo, now, may_create_ns)
            self._check_references(conn, repo_id, new)
            if sizes:
                hold_blobs(conn, sizes, now)
            _insert_image(conn, new, now)
            insert_ignore(
                conn,
                repository_manifests,
                {"repository_id": repo_id, "digest": new.digest, "created": now},
            )
            if tag is not None:
                _tag(conn, repo, repo_id, tag, new.digest, now)
            if signatures is not None:
                record_pushed_signatures(conn, repo_id, new.digest, signatures, now)
            if emit is not None:
                emit(conn)

        # Run again from the start if it loses a deadlock (e.g. with GC's sweep).
        self.db.transaction(work)

    def _check_references(self, conn: Connection, repo_id: int, new: NewManifest) -> None:
        wanted = {b.digest for b in new.blobs}
        linked = {
            r.digest
            for r in conn.execute(
                select(repository_blobs.c.digest).where(
                    repository_blobs.c.repository_id == repo_id,
                    repository_blobs.c.digest.in_(list(wanted)),
                )
            )
        }
        try:
            present = lock_present_blobs(conn, linked)
        except BlobDeleting as exc:
            raise ManifestBlobUnknown([str(exc)]) from None
        missing = sorted(wanted - present.keys())
        _check_sizes(new.blobs, present)
        children = {c.digest for c in new.children}
        if children:
            known = {
                r.digest: int(r.size)
                for r in conn.execute(
                    select(repository_manifests.c.digest, manifests.c.size)
                    .join(manifests, manifests.c.digest == repository_manifests.c.digest)
                    .where(
                        repository_manifests.c.repository_id == repo_id,
                        repository_manifests.c.digest.in_(list(children)),
                    )
                )
            }
            missing += sorted(children - known.keys())
            _check_sizes(new.children, known)
        if missing:
            raise ManifestBlobUnknown(missing)

    def get(self, repo: RepoKey, digest: str | None, tag: str | None) -> StoredManifest:
        with self.db.read() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            if tag is not None:
                digest = current_tag_digest(conn, repo, tag)
                if digest is None:
                    raise ManifestUnknown(f"tag {tag!r} not found in {repo}")
            row = conn.execute(
                select(
                    manifests.c.digest,
                    manifests.c.media_type,
                    manifests.c.content,
                    manifests.c.last_pulled,
                )
                .join(repository_manifests, repository_manifests.c.digest == manifests.c.digest)
                .where(
                    repository_manifests.c.repository_id == repo_id, manifests.c.digest == digest
                )
            ).first()
        if row is None:
            raise ManifestUnknown(f"manifest {digest} not found in {repo}")
        pulled = None if row.last_pulled is None else as_utc(row.last_pulled)
        return StoredManifest(row.digest, row.media_type, bytes(row.content), pulled)

    def mark_pulled(self, manifest: StoredManifest, now: datetime) -> None:
        """Pull statistics, written at most once a minute per manifest."""
        if manifest.last_pulled is not None and now - manifest.last_pulled < PULL_RECORD_INTERVAL:
            return
        with self.db.write() as conn:
            conn.execute(
                update(manifests)
                .where(manifests.c.digest == manifest.digest)
                .values(last_pulled=now)
            )

    def delete(
        self,
        repo: RepoKey,
        digest: str,
        user: str,
        now: datetime,
        emit: Callable[[Connection, DeletedManifest], None] | None = None,
    ) -> DeletedManifest:
        """`emit` adds the event notifications of what was deleted, in the transaction."""
        with self.db.write() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                raise NameUnknown(f"repository {repo} not found")
            deleted = delete_manifest(conn, repo_id, repo, digest, user, now)
            if emit is not None:
                emit(conn, deleted)
            return deleted

    def referrers(self, repo: RepoKey, subject: str) -> list[Referrer]:
        with self.db.read() as conn:
            repo_id = find_repository(conn, repo)
            if repo_id is None:
                return []
            rows = conn.execute(
                select(
                    manifests.c.digest,
                    manifests.c.media_type,
                    manifests.c.size,
                    manifests.c.artifact_type,
                    manifests.c.content,
                )
                .join(repository_manifests, repository_manifests.c.digest == manifests.c.digest)
                .where(
                    repository_manifests.c.repository_id == repo_id,
                    manifests.c.subject_digest == subject,
                )
                .order_by(manifests.c.digest)
            ).all()
        return [
            Referrer(r.digest, r.media_type, int(r.size), r.artifact_type, bytes(r.content))
            for r in rows
        ]


def delete_manifest(
    conn: Connection, repo_id: int, repo: RepoKey, digest: str, user: str, now: datetime
) -> DeletedManifest:
    """Remove image `digest` from the stream, recorded for undo; `ManifestUnknown` if the
    stream does not have it.

    The stream's link and every tag history item of the stream pointing at the image go
    (a tag whose history holds older images then points at the newest remaining one; a
    tag with no other item disappears). The Image object goes too when no other stream
    links it, no tag anywhere points at it and no index lists it; otherwise only this
    stream lets go of it. Everything removed is copied into a `prune_runs` record first.

    Races: the image's blob rows (and, on PostgreSQL, its manifest row) are locked in the
    push path's order before deciding, so a concurrent push of the same image either
    commits first (and is seen, keeping the Image) or waits and re-creates the Image
    after this commit. Anything that must go when a manifest is deleted (for example
    records derived from its content) belongs in this function.
    """
    # Lock first, then look: a concurrent delete of the same image that held the locks has
    # committed by now, and these fresh statements see what it left.
    image_row = _lock_image(conn, digest)
    link = conn.execute(
        select(repository_manifests).where(
            repository_manifests.c.repository_id == repo_id,
            repository_manifests.c.digest == digest,
        )
    ).first()
    if link is None or not image_row:
        raise ManifestUnknown(f"manifest {digest} not found in {repo}")
    check_image_removal(conn, digest, repo_id)  # ImageTagPolicy: its immutable tags stay
    drop_pushed_signatures(conn, repo_id, digest)  # cosign signatures recorded from it
    record = capture_image(conn, digest)
    record["repositories"] = [
        r
        for r in record["repositories"]
        if (r["namespace"], r["name"]) == (repo.namespace, repo.name)
    ]
    events = [
        {**row_to_json(tag_events, row), "namespace": repo.namespace, "stream": repo.name}
        for row in conn.execute(
            select(tag_events).where(
                tag_events.c.repository_id == repo_id, tag_events.c.digest == digest
            )
        ).mappings()
    ]
    if events:
        conn.execute(
            delete(tag_events).where(
                tag_events.c.repository_id == repo_id, tag_events.c.digest == digest
            )
        )
        touch_repository(conn, repo_id, repo)
    conn.execute(
        delete(repository_manifests).where(
            repository_manifests.c.repository_id == repo_id,
            repository_manifests.c.digest == digest,
        )
    )
    image_deleted = not _still_needed(conn, digest)
    if image_deleted:
        conn.execute(delete(manifests).where(manifests.c.digest == digest))
        record_change(conn, IMAGES, "", digest, "DELETED")
    run_id = new_run_id(now, "delete")
    tags = tuple(sorted({e["tag"] for e in events}))
    line = (
        f"Deleted manifest {digest} from {repo}: removed {len(events)} image stream tag "
        f"item(s) of tag(s) {', '.join(tags) or '-'}, "
        f"{'deleted' if image_deleted else 'kept'} the image object"
    )
    record_run(
        conn,
        run_id,
        user,
        {"deleteManifest": f"{repo}@{digest}"},
        undo_record(events, [record]),
        {"line": line, "failed": 0},
        now,
    )
    return DeletedManifest(run_id, digest, tags, len(events), image_deleted)


def _lock_image(conn: Connection, digest: str) -> bool:
    """Lock the Image's blob rows (sorted, as pushes do) and its manifest row; whether
    the manifest row exists."""
    used = select(manifest_blobs.c.blob_digest).where(manifest_blobs.c.manifest_digest == digest)
    conn.execute(
        select(blobs.c.digest)
        .where(blobs.c.digest.in_(used))
        .order_by(blobs.c.digest)
        .with_for_update()
    ).all()
    row = conn.execute(
        select(manifests.c.digest).where(manifests.c.digest == digest).with_for_update()
    ).first()
    return row is not None


def _still_needed(conn: Connection, digest: str) -> bool:
    """Whether another stream, a tag anywhere or an index still refers to the Image."""
    query = select(
        exists().where(repository_manifests.c.digest == digest)
        | exists().where(tag_events.c.digest == digest)
        | exists().where(manifest_children.c.child_digest == digest)
    )
    return bool(conn.execute(query).scalar())


def _insert_image(conn: Connection, new: NewManifest, now: datetime) -> None:
    # FOR SHARE on PostgreSQL: a concurrent `delete_manifest` (FOR UPDATE) either commits
    # first, and this sees no row and inserts it again, or waits until this push commits.
    exists = conn.execute(
        select(manifests.c.digest)
        .where(manifests.c.digest == new.digest)
        .with_for_update(read=True)
    ).first()
    if exists is not None:
        return  # Image already exists: fine (docs/behaviour.md#image-api-resources)
    values = {
        "digest": new.digest,
        "media_type": new.media_type,
        "size": len(new.content),
        "content": new.content,
        "config_digest": new.config_digest,
        "artifact_type": new.artifact_type,
        "subject_digest": new.subject_digest,
        "uid": str(uuid.uuid4()),
        "resource_version": 0,
        "created": new.created,
        "pushed": now,
        "image_metadata": new.image_metadata,
        "storage_size": new.storage_size,
        "layer_count": new.layer_count,
        "top_layer": new.top_layer,
        "user_data": {},
    }
    if not insert_ignore(conn, manifests, values):
        return  # a concurrent push of the same image won
    rv = record_change(conn, IMAGES, "", new.digest, "ADDED")
    conn.execute(
        update(manifests).where(manifests.c.digest == new.digest).values(resource_version=rv)
    )
    if new.blobs:
        conn.execute(
            insert(manifest_blobs),
            [
                {
                    "manifest_digest": new.digest,
                    "position": b.position,
                    "blob_digest": b.digest,
                    "size": b.size,
                    "media_type": b.media_type,
                }
                for b in new.blobs
            ],
        )
    if new.children:
        conn.execute(
            insert(manifest_children),
            [
                {
                    "parent_digest": new.digest,
                    "position": c.position,
                    "child_digest": c.digest,
                    "media_type": c.media_type,
                    "size": c.size,
                    "os": c.os,
                    "architecture": c.architecture,
                    "variant": c.variant,
                }
                for c in new.children
            ],
        )


def _tag(
    conn: Connection, repo: RepoKey, repo_id: int, tag: str, digest: str, now: datetime
) -> None:
    current = current_tag_digest(conn, repo, tag)
    if current == digest:
        return  # same image and reference: no change (docs/behaviour.md#image-api-resources)
    check_move(conn, repo.namespace, repo.name, tag, current, digest)  # ImageTagPolicy
    generation = conn.execute(
        select(repositories.c.generation).where(repositories.c.id == repo_id)
    ).scalar_one()
    conn.execute(
        insert(tag_events).values(
            repository_id=repo_id, tag=tag, digest=digest, created=now, generation=generation
        )
    )
    touch_repository(conn, repo_id, repo)


def _check_sizes(refs: tuple[BlobRef, ...] | tuple[ChildRef, ...], present: dict[str, int]) -> None:
    """Descriptors of blobs and of index children must state the stored size: a client
    refuses content whose length differs, and usage would count the wrong bytes."""
    for ref in refs:
        stored = present.get(ref.digest)
        if stored is not None and stored != ref.size:
            what = "manifest" if isinstance(ref, ChildRef) else "blob"
            raise ManifestSizeMismatch(
                f"descriptor of {ref.digest} says {ref.size} bytes but the {what} has {stored}"
            )
