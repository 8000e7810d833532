"""Prune, undo and GC over the real metadata schema, on SQLite and PostgreSQL.

Rows are inserted directly (what a push records: repositories, blobs, manifests and their
edges, repository links, tag history) so these tests exercise the SQL and the sweep
without a server; the blob store is the in-memory driver.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update

from imageregistry.content.digest import Digest
from imageregistry.metadata.db import Database
from imageregistry.metadata.prune_runs import UndoRefused, get_run
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    repository_blobs,
    repository_manifests,
    tag_events,
    uploads,
)
from imageregistry.prune.gc import GcSettings
from imageregistry.prune.options import PruneOptions
from imageregistry.prune.service import Pruner
from imageregistry.storage.memory import InMemoryBlobStore
from tests.support.rows import insert_manifest, insert_repository

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=10)
_names = itertools.count()


class Seed:
    """Writes what a push records, with a blob store holding the bytes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.store = InMemoryBlobStore()
        self.clock_now = NOW

    def clock(self) -> datetime:
        return self.clock_now

    def pruner(self, grace: timedelta = timedelta(0)) -> Pruner:
        return Pruner(
            self.db,
            self.store,
            self.clock,
            GcSettings(upload_max_age=timedelta(days=1), blob_grace=grace),
            ["reg.test"],
        )

    def repo(self, namespace: str, name: str) -> int:
        with self.db.write() as conn:
            return insert_repository(conn, namespace, name, OLD)

    def blob(self, data: bytes, referenced: datetime = OLD) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        asyncio.run(self.store.put_blob(data, Digest.parse(digest)))
        with self.db.write() as conn:
            if conn.execute(select(blobs.c.digest).where(blobs.c.digest == digest)).first() is None:
                conn.execute(
                    insert(blobs).values(
                        digest=digest,
                        size=len(data),
                        state="present",
                        referenced=referenced,
                        created=OLD,
                    )
                )
        return digest

    def image(
        self,
        repo_id: int,
        layers: list[str],
        tag: str | None = None,
        created: datetime = OLD,
        children: list[str] = (),  # type: ignore[assignment]
        subject: str | None = None,
    ) -> str:
        body = f"manifest-{next(_names)}".encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        with self.db.write() as conn:
            insert_manifest(conn, digest, created, content=body, subject_digest=subject)
            for pos, layer in enumerate(layers):
                conn.execute(
                    insert(manifest_blobs).values(
                        manifest_digest=digest,
                        position=pos,
                        blob_digest=layer,
                        size=1,
                        media_type="application/octet-stream",
                    )
                )
                conn.execute(
                    insert(repository_blobs)
                    .prefix_with("OR IGNORE", dialect="sqlite")
                    .values(repository_id=repo_id, digest=layer, created=created)
                ) if self.db.is_sqlite else _link_pg(conn, repo_id, layer, created)
            for pos, child in enumerate(children):
                conn.execute(
                    insert(manifest_children).values(
                        parent_digest=digest,
                        position=pos,
                        child_digest=child,
                        media_type="x",
                        size=1,
                    )
                )
            conn.execute(
                insert(repository_manifests).values(
                    repository_id=repo_id, digest=digest, created=created
                )
            )
            if tag:
                conn.execute(
                    insert(tag_events).values(
                        repository_id=repo_id, tag=tag, digest=digest, created=created, generation=1
                    )
                )
        return digest

    def count(self, table: object) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _link_pg(conn: object, repo_id: int, digest: str, created: datetime) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    conn.execute(  # type: ignore[attr-defined]
        pg_insert(repository_blobs)
        .values(repository_id=repo_id, digest=digest, created=created)
        .on_conflict_do_nothing()
    )


def seed_stream(seed: Seed, revisions: int = 8) -> tuple[int, list[str], list[str], str]:
    """A stream whose `latest` has `revisions` items; each image: a unique layer + a shared base."""
    repo = seed.repo("team-a", "demo")
    base = seed.blob(b"shared base layer")
    images, uniques = [], []
    for i in range(revisions):
        unique = seed.blob(f"layer {i}".encode())
        uniques.append(unique)
        images.append(
            seed.image(repo, [base, unique], tag="latest", created=OLD + timedelta(minutes=i))
        )
    return repo, images, uniques, base


def stored(seed: Seed, digest: str) -> bool:
    return asyncio.run(seed.store.stat(Digest.parse(digest))) is not None


def test_prune_confirm_then_gc_reclaims_exactly_the_pruned_images_blobs(db: Database) -> None:
    seed = Seed(db)
    _repo, images, uniques, base = seed_stream(seed)
    pruner = seed.pruner()
    options = PruneOptions(keep_tag_revisions=5, keep_younger_than=timedelta(hours=72))

    dry = pruner.prune(options, "admin", dry_run=True)
    assert set(dry.plan.images) == set(images[:3])
    assert seed.count(manifests) == 8  # dry run changed nothing

    done = pruner.prune(options, "admin", dry_run=False)
    assert done.run_id and not done.result.failures
    assert seed.count(manifests) == 5 and seed.count(tag_events) == 5
    assert pruner.prune(options, "admin", dry_run=True).plan.is_empty

    preview = asyncio.run(pruner.gc(dry_run=True))
    assert {b.digest for b in preview.blobs} == set(uniques[:3])
    assert preview.irreversible_runs == (done.run_id,)
    assert all(stored(seed, u) for u in uniques)

    result = asyncio.run(pruner.gc(dry_run=False))
    assert {b.digest for b in result.blobs} == set(uniques[:3])
    assert result.size == sum(len(f"layer {i}") for i in range(3))
    assert not any(stored(seed, u) for u in uniques[:3])
    assert all(stored(seed, u) for u in uniques[3:]) and stored(seed, base)
    assert asyncio.run(pruner.gc(dry_run=True)).blobs == ()
    with db.read() as conn:
        run = get_run(conn, done.run_id)
    assert run is not None and run.state == "irreversible"
    with pytest.raises(UndoRefused, match="garbage collection"):
        pruner.undo(done.run_id)


def test_undo_restores_tags_and_images_in_history_order(db: Database) -> None:
    seed = Seed(db)
    repo, images, _uniques, _base = seed_stream(seed)
    pruner = seed.pruner()
    options = PruneOptions(keep_tag_revisions=2)
    with db.read() as conn:
        before = conn.execute(
            select(tag_events.c.id, tag_events.c.digest).order_by(tag_events.c.id)
        ).all()
    done = pruner.prune(options, "admin", dry_run=False)
    assert seed.count(tag_events) == 2

    restored = pruner.undo(done.run_id)
    assert restored.images == 6 and restored.tag_events == 6
    with db.read() as conn:
        after = conn.execute(
            select(tag_events.c.id, tag_events.c.digest).order_by(tag_events.c.id)
        ).all()
        linked = set(
            conn.execute(
                select(repository_manifests.c.digest).where(
                    repository_manifests.c.repository_id == repo
                )
            ).scalars()
        )
    assert after == before
    assert linked == set(images)
    with pytest.raises(UndoRefused, match="already been undone"):
        pruner.undo(done.run_id)
    # The restored metadata is prunable again, and GC found nothing to reclaim meanwhile.
    assert set(pruner.prune(options, "admin", dry_run=True).plan.images) == set(images[:6])


def test_gc_keeps_index_children_referrers_and_held_blobs(db: Database) -> None:
    seed = Seed(db)
    repo = seed.repo("ns", "multi")
    child_layer = seed.blob(b"child layer")
    sig_layer = seed.blob(b"signature payload")
    child = seed.image(repo, [child_layer])
    index = seed.image(repo, [], tag="latest", children=[child])
    seed.image(repo, [sig_layer], subject=index)
    held = seed.blob(b"just uploaded", referenced=NOW)
    orphan = seed.blob(b"orphan")
    pruner = seed.pruner(grace=timedelta(hours=1))

    assert pruner.prune(PruneOptions(), "admin", dry_run=True).plan.is_empty
    result = asyncio.run(pruner.gc(dry_run=False))
    assert [b.digest for b in result.blobs] == [orphan]
    assert stored(seed, child_layer) and stored(seed, sig_layer) and stored(seed, held)
    # The held blob is reported, so an operator knows why it was not reclaimed yet.
    assert (result.held.count, result.held.size) == (1, len(b"just uploaded"))
    assert result.held.until == NOW + timedelta(hours=1)
    with db.read() as conn:
        assert conn.execute(select(blobs.c.digest).where(blobs.c.digest == orphan)).first() is None


def test_gc_applies_the_current_grace_setting_to_blobs_already_stored(db: Database) -> None:
    """Lowering gc_grace_seconds makes blobs referenced long enough ago eligible at once;
    a blob referenced within the (new) grace period is still never collected."""
    seed = Seed(db)
    older = seed.blob(b"referenced 30 minutes ago", referenced=NOW - timedelta(minutes=30))
    recent = seed.blob(b"referenced 5 minutes ago", referenced=NOW - timedelta(minutes=5))
    kept = asyncio.run(seed.pruner(grace=timedelta(hours=1)).gc(dry_run=False))
    assert kept.blobs == () and kept.held.count == 2
    assert kept.held.until == NOW - timedelta(minutes=5) + timedelta(hours=1)
    lowered = seed.pruner(grace=timedelta(minutes=10))
    preview = asyncio.run(lowered.gc(dry_run=True))
    assert [b.digest for b in preview.blobs] == [older]
    assert preview.held.until == NOW + timedelta(minutes=5)
    result = asyncio.run(lowered.gc(dry_run=False))
    assert [b.digest for b in result.blobs] == [older]
    assert not stored(seed, older) and stored(seed, recent)
    # Raising it again protects what is left for longer, from its last reference.
    raised = asyncio.run(seed.pruner(grace=timedelta(days=1)).gc(dry_run=True))
    assert raised.blobs == () and raised.held.until == NOW - timedelta(minutes=5) + timedelta(
        days=1
    )


def test_gc_finishes_blobs_left_deleting_and_removes_their_links(db: Database) -> None:
    seed = Seed(db)
    repo = seed.repo("ns", "s")
    layer = seed.blob(b"was being deleted")
    with db.write() as conn:
        conn.execute(insert(repository_blobs).values(repository_id=repo, digest=layer, created=OLD))
        conn.execute(update(blobs).where(blobs.c.digest == layer).values(state="deleting"))
        conn.execute(
            insert(repository_blobs).values(
                repository_id=repo, digest="sha256:" + "e" * 64, created=OLD
            )
        )
    pruner = seed.pruner()
    preview = asyncio.run(pruner.gc(dry_run=True))
    assert [b.digest for b in preview.blobs] == [layer]
    assert len(preview.stale_links) == 1  # the link to a blob with no row
    asyncio.run(pruner.gc(dry_run=False))
    assert not stored(seed, layer)
    assert seed.count(repository_blobs) == 0 and seed.count(blobs) == 0


def test_gc_removes_uploads_idle_longer_than_the_configured_age(db: Database) -> None:
    seed = Seed(db)
    repo = seed.repo("ns", "s")
    asyncio.run(seed.store.start_upload("old-upload"))
    asyncio.run(seed.store.start_upload("fresh-upload"))
    with db.write() as conn:
        for upload_id, updated in (("old-upload", OLD), ("fresh-upload", NOW)):
            conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repository_id=repo,
                    namespace="ns",
                    name="s",
                    created=updated,
                    updated=updated,
                )
            )
    pruner = seed.pruner()
    preview = asyncio.run(pruner.gc(dry_run=True))
    assert [u.upload_id for u in preview.uploads] == ["old-upload"]
    asyncio.run(pruner.gc(dry_run=False))
    with db.read() as conn:
        assert list(conn.execute(select(uploads.c.id)).scalars()) == ["fresh-upload"]
    assert asyncio.run(seed.store.upload_size("fresh-upload")) == 0


def test_mark_skips_blobs_referenced_after_the_candidate_query(db: Database) -> None:
    """A reference committed before the mark commits keeps the blob (the re-check)."""
    from imageregistry.metadata.gc_queries import SqlGcStore

    seed = Seed(db)
    repo = seed.repo("ns", "s")
    layer = seed.blob(b"about to be referenced")
    store = SqlGcStore(db, timedelta(0))
    assert [b.digest for b in store.candidates(NOW)] == [layer]
    seed.image(repo, [layer], tag="v1")
    assert store.mark_deleting(NOW, 100) == []


def test_reconcile_reports_bytes_the_database_does_not_know(db: Database) -> None:
    seed = Seed(db)
    known = seed.blob(b"known")
    stray = b"stray bytes"
    stray_digest = Digest.parse("sha256:" + hashlib.sha256(stray).hexdigest())
    asyncio.run(seed.store.put_blob(stray, stray_digest))
    seed.clock_now = datetime.now(UTC) + timedelta(days=2)
    pruner = seed.pruner()
    report = asyncio.run(pruner.reconcile(dry_run=True))
    assert [str(b.digest) for b in report.unknown] == [str(stray_digest)]
    assert stored(seed, str(stray_digest))
    asyncio.run(pruner.reconcile(dry_run=False))
    assert not stored(seed, str(stray_digest)) and stored(seed, known)


def _store_pruner(db: Database, spec: dict[str, object]) -> None:
    from imageregistry.metadata.image_pruner import PRUNER_NAME, PRUNER_RESOURCE
    from imageregistry.metadata.tables import objects

    body = {
        "apiVersion": "imageregistry.operator.alauda.io/v1",
        "kind": "ImagePruner",
        "metadata": {"name": PRUNER_NAME},
        "spec": spec,
    }
    with db.write() as conn:
        conn.execute(
            insert(objects).values(
                resource=PRUNER_RESOURCE,
                namespace="",
                name=PRUNER_NAME,
                uid=str(uuid.uuid4()),
                resource_version=1,
                created=OLD,
                labels={},
                body=body,
            )
        )


def test_scheduled_pruner_runs_once_per_due_minute_on_the_lease_holder(db: Database) -> None:
    from imageregistry.prune.scheduler import ImagePrunerScheduler

    seed = Seed(db)
    _repo, images, uniques, _base = seed_stream(seed)
    _store_pruner(
        db,
        {
            "schedule": "0 * * * *",
            "keepTagRevisions": 5,
            "keepYoungerThanDuration": "72h",
            "successfulJobsHistoryLimit": 2,
        },
    )
    seed.clock_now = NOW.replace(minute=0)
    first = ImagePrunerScheduler(db, seed.pruner(), seed.clock, "replica-a")
    second = ImagePrunerScheduler(db, seed.pruner(), seed.clock, "replica-b")
    status = asyncio.run(first.tick())
    assert status is not None and status["lastRun"]["succeeded"] is True
    assert status["lastRun"]["summary"].startswith("Summary: deleted 3 image object(s)")
    assert seed.count(manifests) == 5
    assert not stored(seed, uniques[0])  # GC ran after the prune
    assert asyncio.run(second.tick()) is None  # the lease is held by replica-a
    assert asyncio.run(first.tick()) is None  # already ran this minute
    seed.clock_now = NOW.replace(minute=1)
    assert asyncio.run(first.tick()) is None  # not due
    assert [c["type"] for c in status["conditions"]] == ["Available", "Scheduled", "Failed"]
    del images
