"""Manifest PUT/GET/HEAD/DELETE by tag and digest, and what the push records."""

from __future__ import annotations

import json

from sqlalchemy import select
from starlette.testclient import TestClient

from imageregistry.content import mediatypes as mt
from imageregistry.metadata.tables import manifests, objects, repositories, tag_events
from imageregistry.services import Services
from tests.unit.oci.conftest import ALICE, REPO, make_image, push_blob, push_image, sha


def test_push_and_pull_by_tag_and_digest(client: TestClient) -> None:
    image = make_image()
    digest = push_image(client, image, "v1")
    for ref in ("v1", digest):
        r = client.get(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 200
        assert r.content == image.manifest  # byte-exact
        assert r.headers["content-type"] == mt.OCI_MANIFEST
        assert r.headers["docker-content-digest"] == digest
        head = client.head(f"/v2/{REPO}/manifests/{ref}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(image.manifest))
        assert head.headers["docker-content-digest"] == digest


def test_put_answers_location_and_digest(client: TestClient) -> None:
    image = make_image()
    for blob in (image.config, *image.layers):
        push_blob(client, blob)
    r = client.put(
        f"/v2/{REPO}/manifests/latest",
        content=image.manifest,
        headers={"Content-Type": mt.OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{REPO}/manifests/{image.digest}"
    assert r.headers["docker-content-digest"] == image.digest
    assert "oci-subject" not in r.headers


def test_docker_schema2_manifest(client: TestClient) -> None:
    image = make_image("d", media_type=mt.DOCKER_MANIFEST)
    push_image(client, image, "docker")
    r = client.get(f"/v2/{REPO}/manifests/docker")
    assert r.headers["content-type"] == mt.DOCKER_MANIFEST


def test_push_records_image_stream_and_tag_history(client: TestClient, services: Services) -> None:
    first, second = make_image("1"), make_image("2")
    push_image(client, first, "latest")
    push_image(client, second, "latest")
    push_image(client, second, "latest")  # same image: no new event
    push_image(client, first, first.digest)  # by digest: no tag event
    with services.db.read() as conn:
        events = conn.execute(select(tag_events.c.digest).order_by(tag_events.c.id.desc())).all()
        assert [e.digest for e in events] == [second.digest, first.digest]
        row = conn.execute(select(manifests).where(manifests.c.digest == first.digest)).one()
        assert row.layer_count == 2
        assert row.storage_size == len(first.config) + sum(len(x) for x in first.layers)
        assert row.image_metadata["architecture"] == "amd64"
        assert row.image_metadata["config"]["Env"] == ["A=1"]
        assert row.config_digest == sha(first.config)
        assert row.top_layer == sha(first.layers[-1])
        assert row.created.year == 2024
        assert row.resource_version > 0
        repo = conn.execute(select(repositories)).one()
        assert (repo.namespace, repo.name) == ("team", "app")
        # The push created "team"; "default" is the API's own, there from the app's start.
        created = (objects.c.resource == "namespaces", objects.c.name != "default")
        ns = conn.execute(select(objects.c.body).where(*created)).all()
        assert [b.body["metadata"]["name"] for b in ns] == ["team"]


def test_manifest_referencing_unknown_blobs(client: TestClient) -> None:
    image = make_image()
    push_blob(client, image.config)  # layers missing
    r = client.put(
        f"/v2/{REPO}/manifests/latest",
        content=image.manifest,
        headers={"Content-Type": mt.OCI_MANIFEST},
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert client.get(f"/v2/{REPO}/manifests/latest").status_code == 404


def test_blobs_of_another_repository_do_not_count(client: TestClient) -> None:
    image = make_image()
    push_image(client, image, "v1", repo="team/other")
    push_blob(client, b"anything")  # the target stream exists
    r = client.put(
        f"/v2/{REPO}/manifests/v1",
        content=image.manifest,
        headers={"Content-Type": mt.OCI_MANIFEST},
    )
    assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_index_requires_its_children_in_the_repository(client: TestClient) -> None:
    child = make_image("c")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": child.digest,
                    "size": len(child.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    headers = {"Content-Type": mt.OCI_INDEX}
    push_blob(client, b"x")
    r = client.put(f"/v2/{REPO}/manifests/multi", content=index, headers=headers)
    assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    push_image(client, child, child.digest)
    r = client.put(f"/v2/{REPO}/manifests/multi", content=index, headers=headers)
    assert r.status_code == 201
    assert client.get(f"/v2/{REPO}/manifests/multi").headers["content-type"] == mt.OCI_INDEX


def test_bad_manifests(client: TestClient) -> None:
    push_blob(client, b"x")
    url = f"/v2/{REPO}/manifests/latest"
    cases = [
        (b"{oops", mt.OCI_MANIFEST, "MANIFEST_INVALID"),
        (
            json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
            mt.DOCKER_SCHEMA1,
            "MANIFEST_INVALID",
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(),
            "text/plain",
            "MANIFEST_INVALID",
        ),
    ]
    for body, content_type, code in cases:
        r = client.put(url, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == code
    r = client.put(url, content=cases[1][0], headers={"Content-Type": cases[1][1]})
    assert "schema1" in r.json()["errors"][0]["message"]
    assert client.get(url).status_code == 404


def test_digest_reference_must_match_body(client: TestClient) -> None:
    image = make_image()
    for blob in (image.config, *image.layers):
        push_blob(client, blob)
    r = client.put(
        f"/v2/{REPO}/manifests/{sha(b'other')}",
        content=image.manifest,
        headers={"Content-Type": mt.OCI_MANIFEST},
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_invalid_tag(client: TestClient) -> None:
    r = client.put(f"/v2/{REPO}/manifests/-bad", content=b"{}")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"


def test_manifest_size_limit(client: TestClient) -> None:
    image = make_image()
    for blob in (image.config, *image.layers):
        push_blob(client, blob)
    doc = json.loads(image.manifest)
    limit = 4 << 20
    doc["annotations"] = {"pad": ""}
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "x" * (limit - base)
    exact = json.dumps(doc).encode()
    assert len(exact) == limit
    headers = {"Content-Type": mt.OCI_MANIFEST}
    assert (
        client.put(f"/v2/{REPO}/manifests/big", content=exact, headers=headers).status_code == 201
    )
    doc["annotations"]["pad"] += "x"
    r = client.put(
        f"/v2/{REPO}/manifests/bigger", content=json.dumps(doc).encode(), headers=headers
    )
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_unknown_manifests(client: TestClient) -> None:
    r = client.get("/v2/team/none/manifests/latest")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    push_image(client, make_image())
    for ref in ("nope", sha(b"nope")):
        r = client.get(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert client.head(f"/v2/{REPO}/manifests/{ref}").status_code == 404


def test_delete_by_digest_removes_the_tagged_image_and_its_tags(client: TestClient) -> None:
    digest = push_image(client, make_image(), "v1")
    push_image(client, make_image(), "stable")  # a second tag on the same image
    r = client.delete(f"/v2/{REPO}/manifests/{digest}")
    assert r.status_code == 202  # OCI distribution spec: DELETE by digest removes it
    assert r.headers["x-registry-prune-run"].startswith("delete-")
    assert client.get(f"/v2/{REPO}/manifests/{digest}").status_code == 404
    for tag in ("v1", "stable"):
        assert client.get(f"/v2/{REPO}/manifests/{tag}").status_code == 404
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == []
    assert client.delete(f"/v2/{REPO}/manifests/{digest}").status_code == 404


def test_delete_by_tag_removes_only_the_tag(client: TestClient) -> None:
    digest = push_image(client, make_image(), "v1")
    r = client.delete(f"/v2/{REPO}/manifests/v1")
    assert r.status_code == 202 and "x-registry-prune-run" not in r.headers
    assert client.get(f"/v2/{REPO}/manifests/v1").status_code == 404
    assert client.get(f"/v2/{REPO}/manifests/{digest}").status_code == 200
    assert client.delete(f"/v2/{REPO}/manifests/v1").status_code == 404


def test_deleting_the_newest_image_of_a_tag_leaves_the_older_one(client: TestClient) -> None:
    old = push_image(client, make_image("1"), "latest")
    new = push_image(client, make_image("2"), "latest")
    assert client.delete(f"/v2/{REPO}/manifests/{new}").status_code == 202
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["latest"]
    r = client.get(f"/v2/{REPO}/manifests/latest")
    assert r.headers["docker-content-digest"] == old


def test_delete_by_digest_needs_the_delete_right(client: TestClient) -> None:
    digest = push_image(client, make_image(), "v1")
    alice = {"Authorization": f"Bearer {ALICE}"}
    r = client.delete(f"/v2/{REPO}/manifests/{digest}", headers=alice)
    assert r.status_code == 403
    assert client.get(f"/v2/{REPO}/manifests/v1").status_code == 200


def test_references_that_are_neither_tag_nor_digest_are_unknown(client: TestClient) -> None:
    push_image(client, make_image(), "v1")
    for ref in (".INVALID_MANIFEST_NAME", "-bad", "sha256:short", "a" * 129):
        r = client.get(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", ref
        assert client.head(f"/v2/{REPO}/manifests/{ref}").status_code == 404
        r = client.put(f"/v2/{REPO}/manifests/{ref}", content=b"{}")
        assert r.status_code == 400, ref
    anonymous = client.get(
        f"/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME", headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401


def test_pull_updates_last_pulled(client: TestClient, services: Services) -> None:
    digest = push_image(client, make_image())
    with services.db.read() as conn:
        before = conn.execute(select(manifests.c.last_pulled)).scalar_one()
    client.get(f"/v2/{REPO}/manifests/latest")
    services.pull_times.flush()  # the server's lifespan does this every few seconds
    with services.db.read() as conn:
        after = conn.execute(
            select(manifests.c.last_pulled).where(manifests.c.digest == digest)
        ).scalar_one()
    assert before is None and after is not None
