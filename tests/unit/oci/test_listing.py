"""Tags list, catalog and referrers: sorting, n/last pagination, Link, filters."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from imageregistry.content import mediatypes as mt
from tests.unit.oci.conftest import REPO, make_image, push_blob, push_image, sha


def test_tags_sorted_and_paginated(client: TestClient) -> None:
    digest = push_image(client, make_image(), "b")
    for tag in ("a", "c", "d"):
        push_image(client, make_image(), tag)
    assert client.get(f"/v2/{REPO}/tags/list").json() == {
        "name": REPO,
        "tags": ["a", "b", "c", "d"],
    }
    r = client.get(f"/v2/{REPO}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["link"] == f'</v2/{REPO}/tags/list?n=2&last=b>; rel="next"'
    r = client.get(f"/v2/{REPO}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c", "d"] and "link" not in r.headers
    r = client.get(f"/v2/{REPO}/tags/list", params={"last": "c"})
    assert r.json()["tags"] == ["d"]
    assert client.get(f"/v2/{REPO}/tags/list", params={"n": 0}).json()["tags"] == []
    r = client.get(f"/v2/{REPO}/tags/list", params={"n": "x"})
    assert r.status_code == 400
    assert digest


def test_tags_of_unknown_repository(client: TestClient) -> None:
    r = client.get("/v2/team/none/tags/list")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_deleting_tags_shrinks_the_list(client: TestClient) -> None:
    push_image(client, make_image(), "one")
    push_image(client, make_image(), "two")
    client.delete(f"/v2/{REPO}/manifests/one")
    assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["two"]


def test_catalog(client: TestClient) -> None:
    for repo in ("team/b", "team/a", "other/z"):
        push_blob(client, b"x", repo)
    assert client.get("/v2/_catalog").json() == {"repositories": ["other/z", "team/a", "team/b"]}
    r = client.get("/v2/_catalog", params={"n": 1})
    assert r.json()["repositories"] == ["other/z"]
    assert r.headers["link"] == '</v2/_catalog?n=1&last=other%2Fz>; rel="next"'
    r = client.get("/v2/_catalog", params={"n": 5, "last": "other/z"})
    assert r.json()["repositories"] == ["team/a", "team/b"]


def _artifact(subject: bytes, artifact_type: str, note: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mt.OCI_EMPTY, "digest": sha(b"{}"), "size": 2},
            "layers": [
                {"mediaType": "text/plain", "digest": sha(note.encode()), "size": len(note)}
            ],
            "subject": {"mediaType": mt.OCI_MANIFEST, "digest": sha(subject), "size": len(subject)},
            "annotations": {"note": note},
        }
    ).encode()


def test_referrers_with_and_without_filter(client: TestClient) -> None:
    image = make_image()
    push_image(client, image, "v1")
    push_blob(client, b"{}")
    artifacts = {}
    for kind, note in (("application/sbom", "s"), ("application/sig", "g")):
        push_blob(client, note.encode())
        body = _artifact(image.manifest, kind, note)
        r = client.put(
            f"/v2/{REPO}/manifests/{sha(body)}",
            content=body,
            headers={"Content-Type": mt.OCI_MANIFEST},
        )
        assert r.status_code == 201
        assert r.headers["oci-subject"] == image.digest
        artifacts[kind] = body
    r = client.get(f"/v2/{REPO}/referrers/{image.digest}")
    assert r.status_code == 200
    assert r.headers["content-type"] == mt.OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == mt.OCI_INDEX
    found = {m["digest"]: m for m in index["manifests"]}
    assert set(found) == {sha(b) for b in artifacts.values()}
    sbom = found[sha(artifacts["application/sbom"])]
    assert sbom["artifactType"] == "application/sbom"
    assert sbom["annotations"] == {"note": "s"}
    assert sbom["size"] == len(artifacts["application/sbom"])
    r = client.get(
        f"/v2/{REPO}/referrers/{image.digest}", params={"artifactType": "application/sig"}
    )
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sha(artifacts["application/sig"])]


def test_subject_may_be_missing_and_referrers_are_always_200(client: TestClient) -> None:
    push_blob(client, b"{}")
    push_blob(client, b"n")
    body = _artifact(b"not pushed", "application/x", "n")
    r = client.put(
        f"/v2/{REPO}/manifests/{sha(body)}", content=body, headers={"Content-Type": mt.OCI_MANIFEST}
    )
    assert r.status_code == 201 and r.headers["oci-subject"] == sha(b"not pushed")
    r = client.get(f"/v2/{REPO}/referrers/{sha(b'not pushed')}")
    assert [m["digest"] for m in r.json()["manifests"]] == [sha(body)]
    r = client.get(f"/v2/{REPO}/referrers/{sha(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = client.get(f"/v2/{REPO}/referrers/bad")
    assert r.status_code == 400
