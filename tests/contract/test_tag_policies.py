"""Immutable tags (ImageTagPolicy) in the metadata layer, on SQLite and on PostgreSQL.

Every write that moves or removes a tag runs the policy check in its own transaction:
push by tag, ImageStreamMapping, ImageStreamTag and image stream deletes, OCI DELETE by
tag or digest, Image deletes, stream history rewrites and prune undo. A new tag and an
identical re-push are never refused; older history items of an immutable tag may go.
The policy is written through the API resource (validation, the policy-write lock).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from imageregistry.apiserver.imagetagpolicy import ImageTagPolicies
from imageregistry.apiserver.resource import RequestContext
from imageregistry.apiserver.status import ApiError
from imageregistry.auth.identity import authenticated
from imageregistry.auth.rbac_store import build_authorizer
from imageregistry.metadata import images as q
from imageregistry.metadata.db import Database
from imageregistry.metadata.prune_runs import restore_run
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import BlobRef, ManifestMetadata, NewManifest
from imageregistry.metadata.tag_policies import (
    POLICIES,
    TagImmutable,
    current_tags,
    immutable_tags,
    lock_for_policy_write,
)
from tests.support.rows import insert_object

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPO = RepoKey("team-a", "app")
CFG = "sha256:" + "c" * 64
LAYER = "sha256:" + "1" * 64
REFUSED = 'tag v1.0 of team-a/app is immutable by ImageTagPolicy "release"'
ADMIN = authenticated("root", ("system:masters",))


def ctx(db: Database) -> RequestContext:
    return RequestContext(ADMIN, build_authorizer(db), lambda: NOW)


def image(char: str) -> NewManifest:
    return NewManifest(
        digest="sha256:" + char * 64,
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=b"{}",
        created=NOW,
        blobs=(
            BlobRef(-1, CFG, 10, "application/vnd.oci.image.config.v1+json"),
            BlobRef(0, LAYER, 100, "application/vnd.oci.image.layer.v1.tar"),
        ),
        config_digest=CFG,
    )


def policy(name: str = "release", **rule: Any) -> dict[str, Any]:
    rule = rule or {"imageStreams": ["*"], "tags": ["v*"]}
    return {"metadata": {"name": name}, "spec": {"immutableTags": [rule]}}


@pytest.fixture
def pushed(db: Database) -> tuple[ManifestMetadata, RegistryMetadata]:
    """team-a/app with v1.0 -> a (earlier b), latest -> b; policy `release` on v*."""
    meta, mans = RegistryMetadata(db), ManifestMetadata(db)
    for digest, size in ((CFG, 10), (LAYER, 100)):
        meta.record_blob(REPO, digest, size, NOW, may_create_ns=True)
    mans.record(REPO, image("b"), "v1.0", NOW, True)
    mans.record(REPO, image("a"), "v1.0", NOW, True)
    mans.record(REPO, image("b"), "latest", NOW, True)
    ImageTagPolicies(db).create(ctx(db), "team-a", policy())
    return mans, meta


def tags(db: Database) -> dict[str, str]:
    with db.read() as conn:
        row = q.stream_row(conn, "team-a", "app")
        assert row is not None
        return current_tags(conn, row.id)


BEFORE = {"v1.0": "sha256:" + "a" * 64, "latest": "sha256:" + "b" * 64}


def test_push_cannot_move_an_immutable_tag_but_may_repeat_or_create(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    mans, _ = pushed
    with pytest.raises(TagImmutable, match=re.escape(REFUSED)):
        mans.record(REPO, image("b"), "v1.0", NOW, True)
    mans.record(REPO, image("a"), "v1.0", NOW, True)  # the identical re-push: no change
    mans.record(REPO, image("b"), "v2.0", NOW, True)  # a new tag matching the rule
    mans.record(REPO, image("a"), "latest", NOW, True)  # not immutable
    assert tags(db) == {**BEFORE, "v2.0": "sha256:" + "b" * 64, "latest": "sha256:" + "a" * 64}
    with pytest.raises(TagImmutable, match=re.escape("tag v2.0 of team-a/app")):
        mans.record(REPO, image("a"), "v2.0", NOW, True)


def test_deletes_of_the_tag_its_image_or_its_stream_are_refused(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    mans, meta = pushed
    with pytest.raises(TagImmutable, match=re.escape(REFUSED)):
        meta.delete_tag(REPO, "v1.0")  # OCI DELETE by tag
    with pytest.raises(TagImmutable, match=re.escape(REFUSED)):
        mans.delete(REPO, "sha256:" + "a" * 64, "user", NOW)  # OCI DELETE by digest
    for refused in (
        lambda conn, row: q.delete_tag(conn, row, "v1.0"),  # ImageStreamTag
        lambda conn, row: q.delete_stream(conn, row),  # ImageStream
        lambda conn, row: q.delete_image(conn, "sha256:" + "a" * 64),  # Image
        lambda conn, row: q.record_mapping(
            conn, "team-a", "app", "v1.0", "sha256:" + "b" * 64, NOW
        ),
        lambda conn, row: q.rewrite_history(conn, row, [], [("v1.0", "sha256:" + "b" * 64)], NOW),
    ):
        with pytest.raises(TagImmutable, match=re.escape(REFUSED)), db.write() as conn:
            refused(conn, q.stream_row(conn, "team-a", "app"))
    assert tags(db) == BEFORE
    # Image b is in v1.0's older history only: deleting it by digest is allowed (the tag
    # stays on a), and so is `latest`.
    mans.delete(REPO, "sha256:" + "b" * 64, "user", NOW)
    assert tags(db) == {"v1.0": "sha256:" + "a" * 64}


def test_older_history_may_be_dropped_and_undo_cannot_move_the_tag(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    with db.write() as conn:
        row = q.stream_row(conn, "team-a", "app")
        assert row is not None
        older = [e.id for e in q.tag_event_rows(conn, row.id) if e.tag == "v1.0"][1:]
        q.rewrite_history(conn, row, older, [], NOW)
    assert tags(db) == BEFORE
    # A delete by digest recorded before the policy existed puts v1.0 back on b if undone.
    ImageTagPolicies(db).delete(ctx(db), "team-a", "release")
    mans, _ = pushed
    mans.record(REPO, image("b"), "v1.0", NOW, True)  # no policy: the tag moves
    run = mans.delete(REPO, "sha256:" + "b" * 64, "user", NOW).run_id
    assert tags(db) == {"v1.0": "sha256:" + "a" * 64}
    ImageTagPolicies(db).create(ctx(db), "team-a", policy())
    with pytest.raises(TagImmutable, match=re.escape(REFUSED)), db.write() as conn:
        restore_run(conn, run, NOW, lock=False)
    assert tags(db) == {"v1.0": "sha256:" + "a" * 64}


def test_namespace_delete_is_not_refused(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    with db.write() as conn:
        q.delete_namespace_streams(conn, "team-a")
        assert q.stream_row(conn, "team-a", "app") is None


def test_immutable_tags_lists_what_prune_must_keep(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    ImageTagPolicies(db).create(
        ctx(db), "team-a", policy("latest-too", imageStreams=["a?p"], tags=["lat[a-z]st"])
    )
    with db.read() as conn:
        found = [(t.tag, t.digest[-1], t.policy) for t in immutable_tags(conn)]
    assert found == [("latest", "b", "latest-too"), ("v1.0", "a", "release")]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"imageStreams": ["*"], "tags": ["v[1"]}, "spec.immutableTags[0].tags[0]"),
        ({"imageStreams": ["App"], "tags": ["v*"]}, "spec.immutableTags[0].imageStreams[0]"),
        ({"imageStreams": [], "tags": ["v*"]}, "spec.immutableTags[0].imageStreams"),
        ({"imageStreams": ["*"], "tags": ["v 1"]}, "spec.immutableTags[0].tags[0]"),
        ({"imageStreams": ["*"], "tags": [""]}, "spec.immutableTags[0].tags[0]"),
        ({"imageStreams": ["*"], "tags": ["v[]"]}, "spec.immutableTags[0].tags[0]"),
        ({"imageStreams": ["*"], "tag": ["v*"]}, "spec.immutableTags[0].tag"),
    ],
)
def test_bad_policies_are_invalid_with_field_causes(
    db: Database, rule: dict[str, Any], field: str
) -> None:
    RegistryMetadata(db).record_blob(REPO, CFG, 10, NOW, may_create_ns=True)
    with pytest.raises(ApiError) as info:
        ImageTagPolicies(db).create(ctx(db), "team-a", policy(**rule))
    assert info.value.code == 422
    assert field in [c["field"] for c in info.value.details["causes"]]


def test_a_tag_write_waits_for_a_policy_being_written(
    db: Database, pushed: tuple[ManifestMetadata, RegistryMetadata]
) -> None:
    """A move checked while a policy is being written cannot commit after the policy's
    writer answered without having seen it (PostgreSQL: the advisory lock; SQLite: the
    one writer lock)."""
    if db.is_sqlite:
        pytest.skip("SQLite write transactions are serialized by the database itself")
    mans, _ = pushed
    ImageTagPolicies(db).delete(ctx(db), "team-a", "release")
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def move() -> None:
        started.set()
        try:
            mans.record(REPO, image("b"), "v1.0", NOW, True)
            outcome.append(None)
        except TagImmutable as exc:
            outcome.append(exc)

    mover = threading.Thread(target=move)
    with db.write() as conn:
        lock_for_policy_write(conn, "team-a")  # what ImageTagPolicies.create does first
        body = {**policy(), "kind": "ImageTagPolicy", "apiVersion": "image.alauda.io/v1"}
        insert_object(conn, POLICIES, "team-a", "release", body, NOW)
        mover.start()
        started.wait(60)
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        with db.read() as probe:
            for _ in range(6000):  # until the push waits for the lock (or has finished)
                if outcome or probe.execute(text(waiting)).scalar_one():
                    break
                threading.Event().wait(0.01)
    mover.join(60)
    assert outcome and isinstance(outcome[0], TagImmutable), outcome
    assert tags(db) == BEFORE
