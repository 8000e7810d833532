"""The data plane's metadata queries, run on SQLite and on PostgreSQL.

Covers what the registry relies on: stream and namespace creation on push, blob links
per repository, the `deleting` guard and the reference times GC depends on, tag history
(prepend, no-op on the same image, delete), delete by digest (tags, image, undo),
upload sessions, and referrers.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from imageregistry.metadata.db import Database, as_utc
from imageregistry.metadata.gc_queries import SqlBlobChecks, SqlGcStore
from imageregistry.metadata.manifest_pull import ManifestPuller, PullTimes
from imageregistry.metadata.prune_runs import get_run, restore_run
from imageregistry.metadata.registry import (
    BlobCorrupt,
    BlobDeleting,
    BlobUnknown,
    NamespaceMissing,
    NameUnknown,
    RegistryMetadata,
    RepoKey,
    TagUnknown,
    UploadLimitReached,
    UploadUnknown,
)
from imageregistry.metadata.registry_manifests import (
    BlobRef,
    ManifestBlobUnknown,
    ManifestMetadata,
    ManifestSizeMismatch,
    ManifestUnknown,
    NewManifest,
)
from imageregistry.metadata.signature_policy import POLICY_ANNOTATION
from imageregistry.metadata.tables import (
    blobs,
    changes,
    manifests,
    objects,
    repositories,
    tag_events,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GRACE = 3600
REPO = RepoKey("team", "app")
L1 = "sha256:" + "1" * 64
L2 = "sha256:" + "2" * 64
CFG = "sha256:" + "c" * 64


@pytest.fixture
def meta(db: Database) -> RegistryMetadata:
    return RegistryMetadata(db)


@pytest.fixture
def mans(db: Database) -> ManifestMetadata:
    return ManifestMetadata(db)


def image(digest_char: str, *layers: str, subject: str | None = None) -> NewManifest:
    layer_refs = [
        BlobRef(i, d, 100, "application/vnd.oci.image.layer.v1.tar") for i, d in enumerate(layers)
    ]
    refs = (BlobRef(-1, CFG, 10, "application/vnd.oci.image.config.v1+json"), *layer_refs)
    return NewManifest(
        digest="sha256:" + digest_char * 64,
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=b"{}",
        created=NOW,
        blobs=refs,
        config_digest=CFG,
        subject_digest=subject,
        artifact_type="application/x" if subject else None,
    )


def push_blobs(meta: RegistryMetadata, *digests: str, repo: RepoKey = REPO) -> None:
    for d in digests:
        meta.record_blob(repo, d, 10 if d == CFG else 100, NOW, may_create_ns=True)


def test_first_blob_creates_namespace_and_stream(meta: RegistryMetadata, db: Database) -> None:
    with pytest.raises(NamespaceMissing):
        meta.record_blob(REPO, L1, 100, NOW, may_create_ns=False)
    assert not meta.repository_exists(REPO)
    push_blobs(meta, L1)
    assert meta.repository_exists(REPO)
    assert meta.blob_size(REPO, L1) == 100
    # The namespace now exists, so a non-admin push into another stream works.
    meta.record_blob(RepoKey("team", "other"), L1, 100, NOW, may_create_ns=False)
    with db.read() as conn:
        events = conn.execute(select(changes.c.resource, changes.c.event)).all()
        rv = conn.execute(select(repositories.c.resource_version)).scalars().all()
    assert ("namespaces", "ADDED") in [tuple(e) for e in events]
    assert ("imagestreams.image.alauda.io", "ADDED") in [tuple(e) for e in events]
    assert all(v > 0 for v in rv)


def test_blob_links_are_per_repository(meta: RegistryMetadata) -> None:
    push_blobs(meta, L1)
    push_blobs(meta, L2, repo=RepoKey("team", "other"))
    with pytest.raises(BlobUnknown):
        meta.blob_size(REPO, L2)
    with pytest.raises(NameUnknown):
        meta.blob_size(RepoKey("team", "none"), L1)
    assert meta.mount_blob(RepoKey("team", "other"), REPO, L2, NOW, True) == 100
    assert meta.blob_size(REPO, L2) == 100
    assert meta.mount_blob(RepoKey("team", "none"), REPO, L1, NOW, True) is None
    meta.unlink_blob(REPO, L2)
    with pytest.raises(BlobUnknown):
        meta.blob_size(REPO, L2)


def test_reference_paths_refuse_blobs_being_deleted_and_record_the_reference_time(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    push_blobs(meta, L1, CFG)
    with db.write() as conn:
        conn.execute(update(blobs).where(blobs.c.digest == L1).values(state="deleting"))
    with pytest.raises(BlobUnknown):
        meta.blob_size(REPO, L1)
    with pytest.raises(BlobDeleting):
        meta.record_blob(REPO, L1, 100, NOW, True)
    assert meta.mount_blob(REPO, RepoKey("team", "x"), L1, NOW, True) is None
    with pytest.raises(ManifestBlobUnknown):
        mans.record(REPO, image("a", L1), "latest", NOW, True)
    later = NOW + timedelta(hours=5)
    meta.record_blob(REPO, CFG, 10, later, True)
    with db.read() as conn:
        seen = conn.execute(select(blobs.c.referenced).where(blobs.c.digest == CFG)).scalar_one()
    assert as_utc(seen) == later
    meta.record_blob(REPO, CFG, 10, NOW, True)  # an out-of-order clock never moves it back
    with db.read() as conn:
        seen = conn.execute(select(blobs.c.referenced).where(blobs.c.digest == CFG)).scalar_one()
    assert as_utc(seen) == later


def test_manifest_needs_its_blobs_linked(meta: RegistryMetadata, mans: ManifestMetadata) -> None:
    push_blobs(meta, CFG)
    with pytest.raises(ManifestBlobUnknown) as info:
        mans.record(REPO, image("a", L1, L2), "latest", NOW, True)
    assert info.value.digests == [L1, L2]
    with pytest.raises(ManifestUnknown):
        mans.get(REPO, None, "latest")


def test_manifest_descriptor_sizes_must_match_the_blobs(
    meta: RegistryMetadata, mans: ManifestMetadata
) -> None:
    push_blobs(meta, CFG)
    meta.record_blob(REPO, L1, 99, NOW, may_create_ns=False)
    with pytest.raises(ManifestSizeMismatch, match="says 100 bytes but the blob has 99"):
        mans.record(REPO, image("a", L1), "latest", NOW, True)
    with pytest.raises(ManifestUnknown):
        mans.get(REPO, None, "latest")


def test_tag_history_prepends_and_skips_same_image(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    push_blobs(meta, CFG, L1, L2)
    a, b = image("a", L1), image("b", L2)
    mans.record(REPO, a, "latest", NOW, True)
    mans.record(REPO, b, "latest", NOW, True)
    mans.record(REPO, b, "latest", NOW, True)
    mans.record(REPO, a, None, NOW, True)  # by digest: no event
    with db.read() as conn:
        history = (
            conn.execute(select(tag_events.c.digest).order_by(tag_events.c.id.desc()))
            .scalars()
            .all()
        )
    assert history == [b.digest, a.digest]
    assert mans.get(REPO, None, "latest").digest == b.digest
    assert mans.get(REPO, a.digest, None).content == b"{}"
    assert meta.list_tags(REPO) == ["latest"]
    assert meta.resolve_tag(REPO, "latest") == b.digest


def _image_rows(db: Database, digest: str) -> int:
    with db.read() as conn:
        return len(
            conn.execute(select(manifests.c.digest).where(manifests.c.digest == digest)).all()
        )


def test_delete_by_digest_removes_tags_and_image_and_undo_restores(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    push_blobs(meta, CFG, L1, L2)
    a, b = image("a", L1), image("b", L2)
    mans.record(REPO, a, "v1", NOW, True)
    mans.record(REPO, a, "stable", NOW, True)
    mans.record(REPO, b, "latest", NOW, True)
    mans.record(REPO, a, "latest", NOW, True)  # latest: [a, b]
    deleted = mans.delete(REPO, a.digest, "alice", NOW)
    assert deleted.tags == ("latest", "stable", "v1") and deleted.tag_items == 3
    assert deleted.image_deleted
    with pytest.raises(ManifestUnknown):
        mans.get(REPO, a.digest, None)
    assert meta.list_tags(REPO) == ["latest"]
    assert meta.resolve_tag(REPO, "latest") == b.digest  # its older item is current again
    assert _image_rows(db, a.digest) == 0
    with pytest.raises(ManifestUnknown):
        mans.delete(REPO, a.digest, "alice", NOW)
    with db.read() as conn:
        run = get_run(conn, deleted.run_id)
    assert run is not None and run.user == "alice" and run.state == "done"
    assert run.options == {"deleteManifest": f"{REPO}@{a.digest}"}
    assert sorted(run.removed["blobDigests"]) == sorted([CFG, L1])
    with db.read() as conn:  # the dry run only reads
        preview = restore_run(conn, deleted.run_id, NOW, lock=False, dry_run=True)
    assert preview.dry_run and preview.image_digests == (a.digest,)
    assert sorted(i.tag for i in preview.items) == ["latest", "stable", "v1"]
    assert meta.list_tags(REPO) == ["latest"] and _image_rows(db, a.digest) == 0
    with db.write() as conn:
        restored = restore_run(conn, deleted.run_id, NOW, lock=not db.is_sqlite)
    assert restored.images == 1 and restored.tag_events == 3 and not restored.dry_run
    assert meta.list_tags(REPO) == ["latest", "stable", "v1"]
    assert {meta.resolve_tag(REPO, t) for t in ("latest", "stable", "v1")} == {a.digest}
    assert mans.get(REPO, a.digest, None).content == b"{}"


def test_delete_by_digest_keeps_an_image_another_stream_uses(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    other = RepoKey("team", "other")
    push_blobs(meta, CFG, L1)
    push_blobs(meta, CFG, L1, repo=other)
    a = image("a", L1)
    mans.record(REPO, a, "v1", NOW, True)
    mans.record(other, a, "v1", NOW, True)
    deleted = mans.delete(REPO, a.digest, "alice", NOW)
    assert not deleted.image_deleted
    with pytest.raises(ManifestUnknown):
        mans.get(REPO, a.digest, None)
    assert mans.get(other, None, "v1").digest == a.digest
    with db.write() as conn:
        restore_run(conn, deleted.run_id, NOW, lock=not db.is_sqlite)
    assert mans.get(REPO, None, "v1").digest == a.digest


def test_delete_by_digest_of_an_untagged_image(
    meta: RegistryMetadata, mans: ManifestMetadata
) -> None:
    push_blobs(meta, CFG, L1)
    a = image("a", L1)
    mans.record(REPO, a, None, NOW, True)
    deleted = mans.delete(REPO, a.digest, "alice", NOW)
    assert deleted.tags == () and deleted.image_deleted
    with pytest.raises(ManifestUnknown):
        mans.get(REPO, a.digest, None)
    with pytest.raises(NameUnknown):
        mans.delete(RepoKey("team", "nothing"), a.digest, "alice", NOW)


def test_concurrent_deletes_and_pushes_never_leave_a_tag_without_its_image(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    """Pushes of an image (with and without blobs) racing deletes of it: afterwards every
    tag of the stream resolves to a manifest the stream serves."""
    from concurrent.futures import ThreadPoolExecutor

    push_blobs(meta, CFG, L1)
    with_blobs = image("a", L1)
    index = NewManifest(
        digest="sha256:" + "f" * 64,
        media_type="application/vnd.oci.image.index.v1+json",
        content=b"{}",
        created=NOW,
    )

    def push(new: NewManifest) -> None:
        mans.record(REPO, new, "v1", NOW, True)

    def remove(new: NewManifest) -> None:
        with contextlib.suppress(ManifestUnknown):  # another delete was first
            mans.delete(REPO, new.digest, "alice", NOW)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for new in (with_blobs, index) * 10:
            push(new)
            list(pool.map(lambda step, new=new: step(new), (remove, push, remove, push)))
            tagged = meta.resolve_tag(REPO, "v1")
            if tagged is not None:
                assert mans.get(REPO, tagged, None).digest == tagged
                assert _image_rows(db, tagged) == 1


def test_delete_tag_removes_only_the_tag(meta: RegistryMetadata, mans: ManifestMetadata) -> None:
    push_blobs(meta, CFG, L1)
    a = image("a", L1)
    mans.record(REPO, a, "v1", NOW, True)
    meta.delete_tag(REPO, "v1")
    with pytest.raises(TagUnknown):
        meta.delete_tag(REPO, "v1")
    assert mans.get(REPO, a.digest, None).digest == a.digest


def test_pull_statistics_written_at_most_once_a_minute(
    meta: RegistryMetadata, mans: ManifestMetadata
) -> None:
    push_blobs(meta, CFG)
    mans.record(REPO, image("a"), "v1", NOW, True)
    mans.mark_pulled(mans.get(REPO, None, "v1"), NOW)
    mans.mark_pulled(mans.get(REPO, None, "v1"), NOW + timedelta(seconds=30))
    assert mans.get(REPO, None, "v1").last_pulled == NOW
    mans.mark_pulled(mans.get(REPO, None, "v1"), NOW + timedelta(minutes=2))
    assert mans.get(REPO, None, "v1").last_pulled == NOW + timedelta(minutes=2)


def test_uploads_belong_to_one_repository(meta: RegistryMetadata) -> None:
    meta.create_upload("u-1", REPO, NOW)
    assert meta.find_upload("u-1", REPO).id == "u-1"
    with pytest.raises(UploadUnknown):
        meta.find_upload("u-1", RepoKey("team", "other"))
    meta.delete_upload("u-1")
    with pytest.raises(UploadUnknown):
        meta.find_upload("u-1", REPO)


def test_referrers_are_scoped_to_the_repository(
    meta: RegistryMetadata, mans: ManifestMetadata
) -> None:
    subject = "sha256:" + "5" * 64
    push_blobs(meta, CFG)
    push_blobs(meta, CFG, repo=RepoKey("team", "other"))
    mans.record(REPO, image("a", subject=subject), None, NOW, True)
    mans.record(RepoKey("team", "other"), image("b", subject=subject), None, NOW, True)
    assert [r.digest for r in mans.referrers(REPO, subject)] == ["sha256:" + "a" * 64]
    assert mans.referrers(RepoKey("team", "none"), subject) == []


def test_catalog_lists_every_stream(meta: RegistryMetadata) -> None:
    for name in ("b", "a"):
        push_blobs(meta, L1, repo=RepoKey("team", name))
    assert meta.list_repositories() == ["team/a", "team/b"]


def test_concurrent_first_pushes_into_a_new_namespace(meta: RegistryMetadata) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def push(i: int) -> None:
        meta.record_blob(RepoKey("fresh", f"s{i % 3}"), L1, 100, NOW, may_create_ns=True)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(push, range(12)))
    assert meta.list_repositories() == ["fresh/s0", "fresh/s1", "fresh/s2"]


def _annotate_namespace(db: Database, namespace: str, value: str) -> None:
    with db.write() as conn:
        row = conn.execute(
            select(objects.c.id, objects.c.body).where(
                objects.c.resource == "namespaces", objects.c.name == namespace
            )
        ).one()
        meta = {**row.body["metadata"], "annotations": {POLICY_ANNOTATION: value}}
        conn.execute(
            update(objects)
            .where(objects.c.id == row.id)
            .values(body={**row.body, "metadata": meta})
        )


def _puller_and_two_images(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> tuple[ManifestPuller, NewManifest, NewManifest]:
    """A puller, and two images whose blobs are pushed: the first tagged `latest`."""
    puller = ManifestPuller(db, PullTimes(db))
    push_blobs(meta, L1, L2, CFG)
    first, second = image("a", L1), image("b", L2)
    mans.record(REPO, first, "latest", NOW, True)
    return puller, first, second


def test_pull_statement_serves_tags_and_digests_and_reads_the_policy(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    puller, first, second = _puller_and_two_images(meta, mans, db)
    assert puller.find("team", "app", None, "nope") is None
    assert puller.find("team", "none", None, "latest") is None
    assert puller.find("team", "app", second.digest, None) is None
    mans.record(REPO, second, "latest", NOW, True)
    by_tag = puller.find("team", "app", None, "latest")
    assert by_tag is not None and by_tag.digest == second.digest  # newest tag event wins
    assert by_tag.content == b"{}" and by_tag.media_type == second.media_type
    assert by_tag.last_pulled is None and not by_tag.requires_signatures
    by_digest = puller.find("team", "app", first.digest, None)
    assert by_digest is not None and by_digest.digest == first.digest
    puller.mark_pulled(by_digest, NOW)
    noted = puller.find("team", "app", first.digest, None)
    assert noted is not None and noted.last_pulled is None  # noted, written by the flush
    assert puller.pull_times.flush() == 1
    again = puller.find("team", "app", first.digest, None)
    assert again is not None and again.last_pulled == NOW
    _annotate_namespace(db, "team", "True")
    pulled = puller.find("team", "app", None, "latest")
    assert pulled is not None and pulled.requires_signatures
    assert POLICY_ANNOTATION in puller.policy_refusal("team", pulled)
    _annotate_namespace(db, "team", "false")
    pulled = puller.find("team", "app", None, "latest")
    assert pulled is not None and not pulled.requires_signatures
    assert puller.policy_refusal("team", pulled) == ""


def test_repeated_pulls_reuse_the_decoded_row_until_the_row_changes(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    puller, first, second = _puller_and_two_images(meta, mans, db)
    pulled = puller.find("team", "app", None, "latest")
    assert pulled is not None and pulled.digest == first.digest
    assert puller.find("team", "app", None, "latest") is pulled  # same row: same value
    mans.record(REPO, second, "latest", NOW, True)  # the tag moves
    moved = puller.find("team", "app", None, "latest")
    assert moved is not None and moved.digest == second.digest
    assert puller.find("team", "app", first.digest, None).digest == first.digest  # type: ignore[union-attr]
    puller.mark_pulled(moved, NOW)
    puller.pull_times.flush()
    noted = puller.find("team", "app", None, "latest")
    assert noted is not None and noted.last_pulled == NOW and noted is not moved
    _annotate_namespace(db, "team", "true")
    assert puller.find("team", "app", None, "latest").requires_signatures  # type: ignore[union-attr]


def test_a_blob_marked_corrupt_is_refused_until_an_upload_repairs_it(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    push_blobs(meta, CFG, L1)
    checks = SqlBlobChecks(db)
    assert [b.digest for b in checks.page("", 10)] == sorted([CFG, L1])
    assert [b.digest for b in checks.page(min(CFG, L1), 10)] == [max(CFG, L1)]
    assert not checks.set_corrupt(L1, 99, corrupt=True)  # recorded size changed: no mark
    assert checks.set_corrupt(L1, 100, corrupt=True)
    assert not checks.set_corrupt(L1, 100, corrupt=True)  # already marked
    assert meta.blob_is_corrupt(L1) and not meta.blob_is_corrupt(CFG)
    with pytest.raises(BlobCorrupt, match="corrupt"):
        meta.blob_size(REPO, L1)
    with pytest.raises(ManifestBlobUnknown, match="corrupt"):
        mans.record(REPO, image("a", L1), "v1", NOW, True)
    assert meta.mount_blob(REPO, RepoKey("team", "other"), L1, NOW, True) is None
    with pytest.raises(BlobCorrupt):  # an upload that did not replace the bytes
        meta.record_blob(REPO, L1, 100, NOW, True)
    meta.record_blob(REPO, L1, 100, NOW, True, repaired=True)
    assert meta.blob_size(REPO, L1) == 100
    mans.record(REPO, image("a", L1), "v1", NOW, True)


def test_a_mount_of_a_blob_stored_with_another_size_falls_back(meta: RegistryMetadata) -> None:
    push_blobs(meta, L1)
    assert meta.mount_blob(REPO, RepoKey("team", "other"), L1, NOW, True, stored_size=7) is None
    assert meta.mount_blob(REPO, RepoKey("team", "other"), L1, NOW, True, stored_size=100) == 100


def test_gc_collects_unreferenced_corrupt_blobs(meta: RegistryMetadata, db: Database) -> None:
    push_blobs(meta, L1)
    assert SqlBlobChecks(db).set_corrupt(L1, 100, corrupt=True)
    later = NOW + timedelta(seconds=GRACE + 1)
    grace = timedelta(seconds=GRACE)
    assert [c.digest for c in SqlGcStore(db, grace).mark_deleting(later, 10)] == [L1]


def test_pull_times_coalesce_and_never_move_back(
    meta: RegistryMetadata, mans: ManifestMetadata, db: Database
) -> None:
    push_blobs(meta, L1, L2, CFG)
    first, second = image("a", L1), image("b", L2)
    mans.record(REPO, first, "v1", NOW, True)
    mans.record(REPO, second, "v2", NOW, True)
    times = PullTimes(db)
    assert times.flush() == 0  # nothing noted: no write
    for seconds in (5, 30, 10):  # repeated pulls of one manifest: one row, newest time
        times.record(first.digest, NOW + timedelta(seconds=seconds))
    times.record(second.digest, NOW + timedelta(minutes=5))
    assert times.pending() == 2
    assert times.flush() == 2 and times.pending() == 0
    assert mans.get(REPO, first.digest, None).last_pulled == NOW + timedelta(seconds=30)
    times.record(second.digest, NOW)  # a late, older note (another worker's buffer)
    times.flush()
    assert mans.get(REPO, second.digest, None).last_pulled == NOW + timedelta(minutes=5)


def test_upload_caps_count_sessions_and_staged_bytes_per_owner(meta: RegistryMetadata) -> None:
    for i in range(2):
        meta.create_upload(f"m{i}", REPO, NOW, "mallory", max_open=2)
    with pytest.raises(UploadLimitReached, match="2 uploads open"):
        meta.create_upload("m2", REPO, NOW, "mallory", max_open=2)
    meta.create_upload("a0", REPO, NOW, "alice", max_open=2)
    meta.create_upload("m2", REPO, NOW, "mallory", max_open=0)  # 0 = no cap
    assert meta.reserve_upload_bytes("m0", "mallory", 0, 600, 1000) == 600
    with pytest.raises(UploadLimitReached, match="600 bytes staged"):
        meta.reserve_upload_bytes("m1", "mallory", 0, 600, 1000)  # m0's room is reserved
    assert meta.reserve_upload_bytes("m1", "mallory", 0, None, 1000) == 400  # what is left
    meta.settle_upload("m1", 0)
    meta.touch_upload("m0", NOW, staged=100)
    assert meta.reserve_upload_bytes("m1", "mallory", 0, 900, 1000) == 900
    assert meta.reserve_upload_bytes(None, "alice", 0, 1000, 1000) == 1000  # monolithic
    meta.delete_upload("m1")
    assert meta.reserve_upload_bytes("m0", "mallory", 100, 900, 1000) == 900
    assert meta.find_upload("m0", REPO).owner == "mallory"
