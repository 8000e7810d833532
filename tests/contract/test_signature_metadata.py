"""Signature SQL behaves the same on SQLite and PostgreSQL: storage, conflicts, policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, insert, select

from imageregistry.metadata import signature_policy as policy
from imageregistry.metadata import signatures as sm
from imageregistry.metadata.db import Database
from imageregistry.metadata.namespaces import create_namespace
from imageregistry.metadata.signature_limits import MAX_LIST_CONTENT_BYTES
from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    objects,
    repository_manifests,
    signatures,
)
from imageregistry.signatures.verify import validate_signature_object
from tests.support.rows import insert_manifest, insert_repository

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
IMG = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
INDEX = "sha256:" + "c" * 64
TRUSTED = {
    "conditions": [
        {"type": "Trusted", "status": "True", "reason": "manually verified"},
        {"type": "ForImage", "status": "True", "reason": "manually verified"},
    ],
    "imageIdentity": "host/ns/demo:latest",
}


@pytest.fixture
def db(db: Database) -> Database:
    """The contract database (tests/contract/conftest.py) holding three images, one
    repository of namespace `ns` with one of them, and an index over another."""
    with db.write() as conn:
        for digest in (IMG, OTHER, INDEX):
            _image(conn, digest)
        repo_id = insert_repository(conn, "ns", "demo", NOW)
        conn.execute(
            insert(repository_manifests).values(repository_id=repo_id, digest=IMG, created=NOW)
        )
        conn.execute(
            insert(manifest_children).values(
                parent_digest=INDEX,
                position=0,
                child_digest=OTHER,
                media_type="application/vnd.oci.image.manifest.v1+json",
                size=10,
            )
        )
        create_namespace(conn, "ns", NOW)
    return db


def _image(conn: Connection, digest: str) -> None:
    insert_manifest(conn, digest, NOW)


def _rv(db: Database, digest: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(manifests.c.resource_version).where(manifests.c.digest == digest)
            ).scalar_one()
        )


def test_add_list_and_bump_image_version(db: Database) -> None:
    before = _rv(db, IMG)
    with db.write() as conn:
        rec = sm.add_signature(conn, f"{IMG}@one", "atomic", b"\x00sig", NOW)
    assert rec.status == {}
    assert _rv(db, IMG) > before
    with db.read() as conn:
        assert sm.list_for_extension(conn, IMG) == [(f"{IMG}@one", "atomic", b"\x00sig")]
        listed = sm.list_signatures(conn, IMG)
        assert [s.name for s in listed] == [f"{IMG}@one"]
        assert listed[0].created == NOW
        assert sm.list_for_extension(conn, OTHER) == []
        assert sm.has_signatures(conn, IMG) and not sm.has_signatures(conn, OTHER)


def test_duplicate_content_and_name_conflict(db: Database) -> None:
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"same", NOW)
    with pytest.raises(sm.SignatureConflict, match="same content"), db.write() as conn:
        sm.add_signature(conn, f"{IMG}@two", "atomic", b"same", NOW)
    with pytest.raises(sm.SignatureConflict, match="same name"), db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"different", NOW)
    # The same bytes on another image are a different signature.
    with db.write() as conn:
        sm.add_signature(conn, f"{OTHER}@one", "atomic", b"same", NOW)
    with db.read() as conn:
        assert len(sm.list_signatures(conn, IMG)) == 1


def test_missing_image_and_bad_names(db: Database) -> None:
    with pytest.raises(sm.ImageNotFound), db.write() as conn:
        sm.add_signature(conn, "sha256:" + "d" * 64 + "@x", "atomic", b"x", NOW)
    for bad in ("nodigest", f"{IMG}@", f"{IMG}", "foo@bar", f"{IMG}@a/b"):
        with pytest.raises(sm.InvalidSignatureName):
            sm.split_name(bad)


def test_update_status_delete_and_delete_all(db: Database) -> None:
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"1", NOW)
        sm.add_signature(conn, f"{IMG}@two", "cosign", b"2", NOW)
    before = _rv(db, IMG)
    with db.write() as conn:
        sm.update_status(conn, f"{IMG}@one", {**TRUSTED, "junk": 1})
    assert _rv(db, IMG) > before
    with db.read() as conn:
        one = sm.list_signatures(conn, IMG)[0]
        assert dict(one.status) == TRUSTED
        assert policy.trusted_digests(conn, [IMG, OTHER]) == {IMG}
    with db.write() as conn:
        assert sm.delete_signature(conn, f"{IMG}@one").name == f"{IMG}@one"
    with pytest.raises(sm.SignatureNotFound), db.write() as conn:
        sm.delete_signature(conn, f"{IMG}@one")
    with db.write() as conn:
        assert sm.delete_all(conn, IMG) == 1
        assert sm.delete_all(conn, IMG) == 0
    with db.read() as conn:
        assert sm.list_signatures(conn, IMG) == []


def test_image_in_repository(db: Database) -> None:
    with db.read() as conn:
        assert sm.image_in_repository(conn, "ns", "demo", IMG)
        assert not sm.image_in_repository(conn, "ns", "demo", OTHER)
        assert not sm.image_in_repository(conn, "ns", "other", IMG)


def _set_policy(db: Database, value: str | None) -> None:
    with db.write() as conn:
        body = conn.execute(
            select(objects.c.body).where(objects.c.resource == "namespaces", objects.c.name == "ns")
        ).scalar_one()
        meta = dict(body["metadata"])
        meta["annotations"] = {} if value is None else {policy.POLICY_ANNOTATION: value}
        conn.execute(
            objects.update()
            .where(objects.c.resource == "namespaces", objects.c.name == "ns")
            .values(body={**body, "metadata": meta})
        )


def test_policy_off_by_default_and_on_by_annotation(db: Database) -> None:
    with db.read() as conn:
        assert policy.signature_policy_allows(conn, "ns", IMG) == (True, "")
        assert policy.signature_policy_allows(conn, "missing-ns", IMG) == (True, "")
    _set_policy(db, "true")
    with db.read() as conn:
        allowed, message = policy.signature_policy_allows(conn, "ns", IMG)
    assert not allowed
    assert policy.POLICY_ANNOTATION in message and IMG in message
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"1", NOW)
    with db.read() as conn:
        assert not policy.signature_policy_allows(conn, "ns", IMG)[0]  # present but not trusted
    with db.write() as conn:
        sm.update_status(conn, f"{IMG}@one", TRUSTED)
    with db.read() as conn:
        assert policy.signature_policy_allows(conn, "ns", IMG) == (True, "")
    _set_policy(db, "false")
    with db.read() as conn:
        assert policy.signature_policy_allows(conn, "ns", OTHER) == (True, "")


def test_policy_trusts_children_of_a_trusted_index(db: Database) -> None:
    _set_policy(db, "true")
    with db.read() as conn:
        assert not policy.signature_policy_allows(conn, "ns", OTHER)[0]
    with db.write() as conn:
        sm.add_signature(conn, f"{INDEX}@one", "atomic", b"1", NOW, status=TRUSTED)
    with db.read() as conn:
        assert policy.signature_policy_allows(conn, "ns", OTHER) == (True, "")
        assert policy.signature_policy_allows(conn, "ns", INDEX) == (True, "")


def test_apply_image_signatures_edits_trust_and_membership(db: Database) -> None:
    import base64

    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"1", NOW)
        sm.add_signature(conn, f"{IMG}@two", "atomic", b"2", NOW)
    entries = [
        {"name": f"{IMG}@one", "type": "atomic", **TRUSTED},
        {"name": f"{IMG}@new", "type": "cosign", "content": base64.b64encode(b"3").decode()},
    ]
    with db.write() as conn:
        assert sm.apply_image_signatures(
            conn, IMG, entries, NOW, validate=validate_signature_object
        )
        assert not sm.apply_image_signatures(
            conn, IMG, entries, NOW, validate=validate_signature_object
        )  # idempotent
        assert not sm.apply_image_signatures(
            conn, IMG, None, NOW, validate=validate_signature_object
        )
    with db.read() as conn:
        by_name = {s.name: s for s in sm.list_signatures(conn, IMG)}
    assert set(by_name) == {f"{IMG}@one", f"{IMG}@new"}
    assert policy.is_trusted(by_name[f"{IMG}@one"].status)
    assert by_name[f"{IMG}@new"].content == b"3"


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"name": f"{IMG}@one", "content": "Mg=="}, "immutable"),
        ({"name": f"{IMG}@one", "conditions": [{"type": "Trusted", "status": "True"}]}, "together"),
        ({"name": f"{IMG}@one", "imageIdentity": "x"}, "must be empty"),
        ({"name": f"{OTHER}@one"}, "must be"),
        ({"name": f"{IMG}@fresh"}, "required for a new signature"),
        ("nope", "must be an object"),
    ],
)
def test_apply_image_signatures_rejects_invalid(db: Database, entry: object, needle: str) -> None:
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"1", NOW)
    with pytest.raises(sm.InvalidSignatureUpdate, match=needle), db.write() as conn:
        sm.apply_image_signatures(conn, IMG, [entry], NOW, validate=validate_signature_object)
    with db.read() as conn:
        assert [s.status for s in sm.list_signatures(conn, IMG)] == [{}]


def test_apply_image_signatures_keeps_the_list_within_what_clients_read(db: Database) -> None:
    import base64

    big = base64.b64encode(b"x" * (MAX_LIST_CONTENT_BYTES // 2 + 1)).decode()
    entries = [{"name": f"{IMG}@big{i}", "type": "atomic", "content": big} for i in range(2)]
    with pytest.raises(sm.InvalidSignatureUpdate, match="exceed"), db.write() as conn:
        sm.apply_image_signatures(conn, IMG, entries, NOW, validate=validate_signature_object)
    with db.write() as conn:
        assert sm.apply_image_signatures(
            conn, IMG, entries[:1], NOW, validate=validate_signature_object
        )
    with db.read() as conn:
        assert [s.name for s in sm.list_signatures(conn, IMG)] == [f"{IMG}@big0"]


def test_policy_lets_cosign_signature_artifacts_through(db: Database) -> None:
    _set_policy(db, "true")
    sig_manifest = "sha256:" + "9" * 64
    with db.write() as conn:
        _image(conn, sig_manifest)
        conn.execute(
            insert(manifest_blobs).values(
                manifest_digest=sig_manifest,
                position=0,
                blob_digest=OTHER,
                size=3,
                media_type=policy.COSIGN_LAYER_MEDIA_TYPE,
            )
        )
        conn.execute(
            insert(manifest_blobs).values(
                manifest_digest=IMG,
                position=0,
                blob_digest=OTHER,
                size=3,
                media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            )
        )
    with db.read() as conn:
        assert policy.signature_policy_allows(conn, "ns", sig_manifest) == (True, "")
        assert not policy.signature_policy_allows(conn, "ns", IMG)[0]


SIG = "sha256:" + "e" * 64  # a pushed cosign signature manifest


def _repo_with_signature_manifest(db: Database) -> int:
    with db.write() as conn:
        repo_id = int(
            conn.execute(
                select(repository_manifests.c.repository_id).where(
                    repository_manifests.c.digest == IMG
                )
            ).scalar_one()
        )
        _image(conn, SIG)
        conn.execute(
            insert(repository_manifests).values(repository_id=repo_id, digest=SIG, created=NOW)
        )
    return repo_id


def _pushed(image: str, *contents: bytes, may_sign: bool = True) -> sm.PushedSignatures:
    found = tuple((f"{image}@cosign-{c.hex()[:16]}", c) for c in contents)
    return sm.PushedSignatures(image, found, may_sign)


def test_pushed_signatures_need_the_image_here_the_right_and_room(db: Database) -> None:
    repo_id = _repo_with_signature_manifest(db)
    with db.write() as conn:  # OTHER is not in the repository pushed to: nothing recorded
        assert sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(OTHER, b"s1"), NOW) == 0
    with pytest.raises(sm.SignatureDenied, match="create imagesignatures"), db.write() as conn:
        sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s1", may_sign=False), NOW)
    big = MAX_LIST_CONTENT_BYTES // 2 + 1
    with pytest.raises(sm.SignatureLimitExceeded, match="would exceed"), db.write() as conn:
        pushed = _pushed(IMG, b"\x01" * big, b"\x02" * big)
        sm.record_pushed_signatures(conn, repo_id, SIG, pushed, NOW)
    with db.read() as conn:
        assert sm.list_signatures(conn, IMG) == [] and sm.list_signatures(conn, OTHER) == []
    with db.write() as conn:
        assert sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s1"), NOW) == 1
        assert sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s1"), NOW) == 0
    # Already stored: a pusher without the right re-pushing it is not refused.
    with db.write() as conn:
        again = _pushed(IMG, b"s1", may_sign=False)
        assert sm.record_pushed_signatures(conn, repo_id, SIG, again, NOW) == 0


def test_every_way_of_adding_a_signature_is_held_to_the_limits(db: Database) -> None:
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@one", "atomic", b"\x01" * MAX_LIST_CONTENT_BYTES, NOW)
    with pytest.raises(sm.SignatureLimitExceeded), db.write() as conn:
        sm.add_signature(conn, f"{IMG}@two", "atomic", b"\x02", NOW)
    with db.write() as conn:  # the budget is per type
        sm.add_signature(conn, f"{IMG}@three", "cosign", b"\x03", NOW)


def test_pushed_signatures_leave_with_their_manifest(db: Database) -> None:
    repo_id = _repo_with_signature_manifest(db)
    with db.write() as conn:
        sm.add_signature(conn, f"{IMG}@atomic", "atomic", b"extension", NOW)
        sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s1", b"s2"), NOW)
    before = _rv(db, IMG)
    with db.write() as conn:
        assert sm.drop_pushed_signatures(conn, repo_id, SIG) == 2
        assert sm.drop_pushed_signatures(conn, repo_id, SIG) == 0
    assert _rv(db, IMG) > before
    with db.read() as conn:
        assert [s.name for s in sm.list_signatures(conn, IMG)] == [f"{IMG}@atomic"]
    # Paths that unlink the manifest without the hook (prune, stream delete): the foreign key.
    with db.write() as conn:
        sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s3"), NOW)
        conn.execute(
            repository_manifests.delete().where(
                repository_manifests.c.repository_id == repo_id,
                repository_manifests.c.digest == SIG,
            )
        )
    with db.read() as conn:
        assert [s.name for s in sm.list_signatures(conn, IMG)] == [f"{IMG}@atomic"]


def test_prune_undo_restores_a_pushed_signature_only_with_its_manifest(db: Database) -> None:
    repo_id = _repo_with_signature_manifest(db)
    with db.write() as conn:
        sm.record_pushed_signatures(conn, repo_id, SIG, _pushed(IMG, b"s1"), NOW)
        saved = [dict(r) for r in conn.execute(select(signatures)).mappings()]
        conn.execute(signatures.delete())
    with db.write() as conn:  # the signature manifest is back in its repository
        assert sm.restore_signature_rows(conn, saved) == 1
        conn.execute(signatures.delete())
        conn.execute(repository_manifests.delete().where(repository_manifests.c.digest == SIG))
    with db.write() as conn:  # it is not: the signature would have gone with it
        assert sm.restore_signature_rows(conn, saved) == 0
        assert sm.list_signatures(conn, IMG) == []
