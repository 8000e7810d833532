"""ResourceQuota and LimitRange decisions on SQLite and on PostgreSQL.

Usage is computed from the reference tables inside the writing transaction, so these
tests drive the data plane (blob links, pushes, deletes, undo) and compare the namespace's
usage with what the test pushed: a layer shared within a namespace counts once, shared
with another namespace counts in each, unreferenced blobs do not count, and concurrent
pushes on separate connections never pass a limit together.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.images import delete_stream
from imageregistry.metadata.namespaces import create_namespace
from imageregistry.metadata.prune_runs import UndoRefused
from imageregistry.metadata.quota import (
    IMAGE_LIMIT,
    IMAGES,
    STORAGE,
    STREAMS,
    LimitExceeded,
    LimitsCache,
    QuotaExceeded,
    namespace_usage,
)
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import BlobRef, ManifestMetadata, NewManifest
from imageregistry.metadata.tables import objects, repositories
from imageregistry.prune.gc import GcSettings
from imageregistry.prune.service import Pruner
from imageregistry.storage.memory import InMemoryBlobStore
from tests.support.rows import insert_object

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CFG = "sha256:" + "c" * 64
CFG_SIZE = 10


def layer(n: int) -> str:
    return f"sha256:{n:064x}"


def image(n: int, layers: dict[str, int]) -> NewManifest:
    refs = [BlobRef(-1, CFG, CFG_SIZE, "application/vnd.oci.image.config.v1+json")]
    for i, (digest, size) in enumerate(layers.items()):
        refs.append(BlobRef(i, digest, size, "application/vnd.oci.image.layer.v1.tar"))
    return NewManifest(
        digest=f"sha256:{n + 0xF000:064x}",
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=b"{}",
        created=NOW,
        blobs=tuple(refs),
        config_digest=CFG,
        storage_size=CFG_SIZE + sum(layers.values()),
    )


def put_object(db: Database, resource: str, namespace: str, name: str, spec: Any) -> None:
    body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
    with db.write() as conn:
        insert_object(conn, resource, namespace, name, body, NOW)


def quota(db: Database, namespace: str, name: str, **hard: str) -> None:
    put_object(db, "resourcequotas", namespace, name, {"hard": hard})


def push(
    db: Database,
    repo: RepoKey,
    manifest: NewManifest,
    tag: str | None = "latest",
    manifests: ManifestMetadata | None = None,
) -> None:
    """`manifests`: the one a server process keeps (with its cache of the namespace's
    quota and limit objects); a new one by default."""
    meta = RegistryMetadata(db)
    for ref in manifest.blobs:
        meta.record_blob(repo, ref.digest, ref.size, NOW, may_create_ns=True)
    (manifests or ManifestMetadata(db)).record(repo, manifest, tag, NOW, may_create_ns=True)


def usage(db: Database, namespace: str) -> dict[str, int]:
    with db.read() as conn:
        return dict(namespace_usage(conn, namespace).values)


def test_usage_counts_distinct_blobs_per_namespace(db: Database) -> None:
    base = {layer(1): 1000}
    push(db, RepoKey("a", "one"), image(1, {**base, layer(2): 200}))
    push(db, RepoKey("a", "two"), image(2, {**base, layer(3): 30}))
    push(db, RepoKey("b", "one"), image(3, {**base, layer(4): 4}))
    # An uploaded blob no manifest references does not count.
    RegistryMetadata(db).record_blob(RepoKey("a", "one"), layer(9), 5000, NOW, True)
    assert usage(db, "a") == {STREAMS: 2, IMAGES: 2, STORAGE: 1000 + 200 + 30 + CFG_SIZE}
    assert usage(db, "b") == {STREAMS: 1, IMAGES: 1, STORAGE: 1000 + 4 + CFG_SIZE}
    assert usage(db, "empty") == {STREAMS: 0, IMAGES: 0, STORAGE: 0}


def test_push_refused_over_storage_and_nothing_recorded(db: Database) -> None:
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    quota(db, "a", "q", **{STORAGE: "2000"})
    push(db, RepoKey("a", "app"), image(1, {layer(1): 1000}))
    with pytest.raises(QuotaExceeded) as refused:
        push(db, RepoKey("a", "app"), image(2, {layer(1): 1000, layer(2): 991}), tag="v2")
    assert str(refused.value) == (
        f"exceeded quota q: {STORAGE} requested 991, used 1010, limited 1.95Ki"
    )
    assert usage(db, "a")[IMAGES] == 1
    push(db, RepoKey("a", "app"), image(3, {layer(1): 1000, layer(3): 990}), tag="v3")
    assert usage(db, "a")[STORAGE] == 2000


def test_stream_count_is_checked_where_streams_are_made(db: Database) -> None:
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    quota(db, "a", "streams", **{STREAMS: "1"})
    push(db, RepoKey("a", "one"), image(1, {layer(1): 10}))
    meta = RegistryMetadata(db)
    with pytest.raises(QuotaExceeded, match="requested 1, used 1, limited 1"):
        meta.check_push_target(RepoKey("a", "two"), may_create_ns=True)  # before an upload
    with pytest.raises(QuotaExceeded):
        meta.record_blob(RepoKey("a", "two"), layer(1), 10, NOW, True)
    assert usage(db, "a")[STREAMS] == 1


def test_limit_ranges(db: Database) -> None:
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    put_object(
        db,
        "limitranges",
        "a",
        "lr",
        {
            "limits": [
                {"type": "image.alauda.io/Image", "max": {"storage": "1Ki"}},
                {"type": "image.alauda.io/ImageStream", "max": {"image.alauda.io/image-tags": "1"}},
            ]
        },
    )
    with pytest.raises(LimitExceeded, match=r"refused by LimitRange lr: image\.alauda\.io/Image"):
        push(db, RepoKey("a", "app"), image(1, {layer(1): 1015}))
    push(db, RepoKey("a", "app"), image(2, {layer(5): 1014}), tag="one")
    with pytest.raises(LimitExceeded, match=r"image-tags is 1, image stream a/app has 1"):
        push(db, RepoKey("a", "app"), image(2, {layer(5): 1014}), tag="two")
    push(db, RepoKey("a", "app"), image(3, {layer(2): 1}), tag="one")  # moves the tag


def race_eight_pushes(db: Database, process: ManifestMetadata | None) -> list[str]:
    """Eight images of one 100-byte layer each pushed into race/app at once, each through a
    process of its own (`process` None) or all through `process`: each push's outcome. The
    blobs are uploaded first, so only the manifest PUTs race."""
    manifests = [image(i, {layer(100 + i): 100}) for i in range(8)]
    for m in manifests:
        for ref in m.blobs:
            RegistryMetadata(db).record_blob(
                RepoKey("race", "app"), ref.digest, ref.size, NOW, True
            )
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def one(m: NewManifest) -> None:
        start.wait()
        try:
            (process or ManifestMetadata(db)).record(
                RepoKey("race", "app"), m, m.digest[-6:], NOW, True
            )
            outcomes.append("ok")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=one, args=(m,)) for m in manifests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcomes


def test_concurrent_pushes_admit_exactly_what_fits(db: Database) -> None:
    with db.write() as conn:
        create_namespace(conn, "race", NOW)
    each = 100 + CFG_SIZE
    quota(db, "race", "q", **{STORAGE: str(CFG_SIZE + 5 * 100 + 50)})
    outcomes = race_eight_pushes(db, None)
    assert sorted(outcomes) == ["ok"] * 5 + ["refused"] * 3
    assert usage(db, "race")[STORAGE] == CFG_SIZE + 5 * 100
    assert each  # the config is shared by all eight: charged once


def test_undo_charges_again_or_refuses(db: Database) -> None:
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    quota(db, "a", "q", **{IMAGES: "1"})
    repo = RepoKey("a", "app")
    first, second = image(1, {layer(1): 10}), image(2, {layer(2): 10})
    push(db, repo, first)
    run = ManifestMetadata(db).delete(repo, first.digest, "admin", NOW).run_id
    assert usage(db, "a")[IMAGES] == 0
    push(db, repo, second, tag="v2")
    pruner = Pruner(db, InMemoryBlobStore(), lambda: NOW, GcSettings(timedelta(days=7)))
    with pytest.raises(
        UndoRefused, match=re.escape(f"exceeded quota q: {IMAGES} requested 1, used 1")
    ):
        pruner.undo(run)
    assert usage(db, "a")[IMAGES] == 1
    ManifestMetadata(db).delete(repo, second.digest, "admin", NOW)
    pruner.undo(run)
    assert usage(db, "a") == {STREAMS: 1, IMAGES: 1, STORAGE: CFG_SIZE + 10}


def delete_object(db: Database, resource: str, namespace: str, name: str) -> None:
    with db.write() as conn:
        conn.execute(
            objects.delete().where(
                objects.c.resource == resource,
                objects.c.namespace == namespace,
                objects.c.name == name,
            )
        )


def test_admission_bound_never_admits_too_much_nor_refuses_wrongly(db: Database) -> None:
    """Pushes admit against a stored bound of the namespace's usage: it must stay at or
    above the truth whatever happens between pushes (deletes, pushes while no quota
    exists, an undo), and a refusal is always decided on the usage from scratch."""
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    repo = RepoKey("a", "app")
    quota(db, "a", "q", **{IMAGES: "2"})
    push(db, repo, image(1, {layer(1): 10}), tag="one")
    push(db, repo, image(2, {layer(2): 10}), tag="two")
    # A delete leaves the bound high; the next push is decided on the real usage.
    run = ManifestMetadata(db).delete(repo, image(2, {layer(2): 10}).digest, "admin", NOW).run_id
    push(db, repo, image(3, {layer(3): 10}), tag="three")
    with pytest.raises(QuotaExceeded, match="used 2, limited 2"):
        push(db, repo, image(4, {layer(4): 10}), tag="four")
    # Pushes while the namespace has no quota are not missed when one comes back.
    delete_object(db, "resourcequotas", "a", "q")
    push(db, repo, image(4, {layer(4): 10}), tag="four")
    push(db, repo, image(5, {layer(5): 10}), tag="five")
    quota(db, "a", "q", **{IMAGES: "5"})
    push(db, repo, image(6, {layer(6): 10}), tag="six")
    with pytest.raises(QuotaExceeded, match="used 5, limited 5"):
        push(db, repo, image(7, {layer(7): 10}), tag="seven")
    # An undo puts an image back outside the push path: the bound follows it.
    ManifestMetadata(db).delete(repo, image(6, {layer(6): 10}).digest, "admin", NOW)
    Pruner(db, InMemoryBlobStore(), lambda: NOW, GcSettings(timedelta(days=7))).undo(run)
    with pytest.raises(QuotaExceeded, match="used 5, limited 5"):
        push(db, repo, image(7, {layer(7): 10}), tag="seven")
    assert usage(db, "a")[IMAGES] == 5


def replace_quota(db: Database, namespace: str, name: str, **hard: str) -> None:
    """Change a quota's spec in place (same object, new resourceVersion), as an update
    through the API does."""
    with db.write() as conn:
        rv = record_change(conn, "resourcequotas", namespace, name, "MODIFIED")
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": {"hard": hard}}
        conn.execute(
            objects.update()
            .where(
                objects.c.resource == "resourcequotas",
                objects.c.namespace == namespace,
                objects.c.name == name,
            )
            .values(resource_version=rv, body=body)
        )


def test_one_process_sees_every_change_of_the_namespace_limits(db: Database) -> None:
    """A server process keeps the namespace's parsed quota and limit objects between
    pushes; every change of them (here written outside that process) applies to its
    next push: lowered, raised, deleted and recreated under the same name, a LimitRange
    added."""
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    repo, process = RepoKey("a", "app"), ManifestMetadata(db)
    quota(db, "a", "q", **{IMAGES: "3"})
    push(db, repo, image(1, {layer(1): 10}), "one", process)
    push(db, repo, image(2, {layer(2): 10}), "two", process)
    replace_quota(db, "a", "q", **{IMAGES: "2"})
    with pytest.raises(QuotaExceeded, match="requested 1, used 2, limited 2"):
        push(db, repo, image(3, {layer(3): 10}), "three", process)
    replace_quota(db, "a", "q", **{IMAGES: "5"})
    push(db, repo, image(3, {layer(3): 10}), "three", process)
    delete_object(db, "resourcequotas", "a", "q")
    quota(db, "a", "q", **{IMAGES: "3"})
    with pytest.raises(QuotaExceeded, match="requested 1, used 3, limited 3"):
        push(db, repo, image(4, {layer(4): 10}), "four", process)
    delete_object(db, "resourcequotas", "a", "q")
    push(db, repo, image(4, {layer(4): 10}), "four", process)
    put_object(
        db, "limitranges", "a", "lr", {"limits": [{"type": IMAGE_LIMIT, "max": {"storage": "1Ki"}}]}
    )
    with pytest.raises(LimitExceeded, match="refused by LimitRange lr"):
        push(db, repo, image(5, {layer(5): 2000}), "five", process)
    assert usage(db, "a")[IMAGES] == 4


def test_image_with_many_layers_requests_only_the_new_ones(db: Database) -> None:
    """An image with more layers than the check asks about in its one statement: layers
    the namespace holds are still not requested again."""
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    repo, process = RepoKey("a", "app"), ManifestMetadata(db)
    base = {layer(100 + i): 10 for i in range(40)}
    quota(db, "a", "q", **{STORAGE: str(CFG_SIZE + 400 + 70)})
    push(db, repo, image(1, base), "one", process)
    second = {**dict(list(base.items())[:30]), **{layer(200 + i): 7 for i in range(10)}}
    push(db, repo, image(2, second), "two", process)
    assert usage(db, "a")[STORAGE] == CFG_SIZE + 400 + 70
    with pytest.raises(QuotaExceeded, match=f"{STORAGE} requested 1, used 480, limited 480"):
        push(db, repo, image(3, {**second, layer(300): 1}), "three", process)


def test_layer_shared_mostly_with_other_namespaces_is_requested_exactly(db: Database) -> None:
    """The check looks at a blob's most recent references only (so a base layer that
    thousands of other images share costs no more than a new one); when they all belong
    to other namespaces the layer is first taken as new, and a push that then does not
    fit is measured exactly: admitted when the truth fits, refused with the true request."""
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    process = ManifestMetadata(db)
    process.limits = LimitsCache(probes=4)
    base = layer(1)
    push(db, RepoKey("a", "app"), image(1, {base: 1000}), "one", process)
    for i in range(6):  # newer references of the base layer, all in namespace b
        push(db, RepoKey("b", "app"), image(10 + i, {base: 1000, layer(10 + i): 1}), f"v{i}")
    quota(db, "a", "q", **{STORAGE: str(CFG_SIZE + 1000 + 5)})
    push(db, RepoKey("a", "app"), image(2, {base: 1000, layer(2): 5}), "two", process)
    with pytest.raises(QuotaExceeded, match=f"{STORAGE} requested 1, used 1015, limited 1015"):
        push(db, RepoKey("a", "app"), image(3, {base: 1000, layer(3): 1}), "three", process)
    assert usage(db, "a")[STORAGE] == CFG_SIZE + 1000 + 5


def test_empty_stream_left_by_a_refused_push_counts_until_deleted(db: Database) -> None:
    """A push into a new stream creates the stream at its first blob upload; when its
    manifest is then refused (here over storage), the empty stream stays and counts,
    like every stream `kubectl get imagestreams` lists (docs/operations.md, "Quotas and
    limits"), and deleting it frees its place at once."""
    with db.write() as conn:
        create_namespace(conn, "a", NOW)
    quota(db, "a", "q", **{STREAMS: "2", STORAGE: str(CFG_SIZE + 10)})
    push(db, RepoKey("a", "one"), image(1, {layer(1): 10}))
    with pytest.raises(QuotaExceeded, match=f"{STORAGE} requested 5"):
        push(db, RepoKey("a", "two"), image(2, {layer(2): 5}))
    assert usage(db, "a") == {STREAMS: 2, IMAGES: 1, STORAGE: CFG_SIZE + 10}
    meta = RegistryMetadata(db)
    with pytest.raises(QuotaExceeded, match=f"{STREAMS} requested 1, used 2, limited 2"):
        meta.check_push_target(RepoKey("a", "three"), may_create_ns=True)
    with db.write() as conn:
        row = conn.execute(
            select(repositories).where(
                repositories.c.namespace == "a", repositories.c.name == "two"
            )
        ).one()
        delete_stream(conn, row)
    assert usage(db, "a")[STREAMS] == 1
    meta.check_push_target(RepoKey("a", "three"), may_create_ns=True)


def test_concurrent_pushes_through_one_process_admit_exactly_what_fits(db: Database) -> None:
    """As `test_concurrent_pushes_admit_exactly_what_fits`, through one server process
    that knows the namespace's quota already (its pushes then check and raise the
    admission bound in one statement each)."""
    with db.write() as conn:
        create_namespace(conn, "race", NOW)
    quota(db, "race", "q", **{STORAGE: str(CFG_SIZE + 100 + 5 * 100 + 50)})
    process = ManifestMetadata(db)
    push(db, RepoKey("race", "app"), image(99, {layer(99): 100}), "first", process)
    outcomes = race_eight_pushes(db, process)
    assert sorted(outcomes) == ["ok"] * 5 + ["refused"] * 3
    assert usage(db, "race")[STORAGE] == CFG_SIZE + 100 + 5 * 100
