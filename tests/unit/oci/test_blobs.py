"""Blob HEAD/GET (whole and ranged) and DELETE."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from imageregistry.metadata.tables import blobs
from imageregistry.services import Services
from tests.unit.oci.conftest import REPO, push_blob, sha

DATA = bytes(range(256)) * 4


@pytest.fixture
def blob(client: TestClient) -> str:
    push_blob(client, DATA)
    return f"/v2/{REPO}/blobs/{sha(DATA)}"


def test_get_and_head(client: TestClient, blob: str) -> None:
    r = client.get(blob)
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["docker-content-digest"] == sha(DATA)
    head = client.head(blob)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(DATA))
    assert head.headers["docker-content-digest"] == sha(DATA)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-4", 1020, 1023),
        ("bytes=5-99999", 5, 1023),
    ],
)
def test_range_reads(client: TestClient, blob: str, header: str, start: int, end: int) -> None:
    r = client.get(blob, headers={"Range": header})
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"


@pytest.mark.parametrize(
    "header", ["bytes=2000-", "bytes=9-3", "items=0-1", "bytes=0-1,4-5", "bytes=-0"]
)
def test_unsatisfiable_ranges_are_416(client: TestClient, blob: str, header: str) -> None:
    r = client.get(blob, headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"


def test_unknown_blob_and_unknown_repository(client: TestClient, blob: str) -> None:
    r = client.get(f"/v2/{REPO}/blobs/{sha(b'missing')}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    r = client.get(f"/v2/team/none/blobs/{sha(DATA)}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert client.head(f"/v2/{REPO}/blobs/{sha(b'missing')}").status_code == 404


def test_invalid_digest_in_path(client: TestClient) -> None:
    r = client.get(f"/v2/{REPO}/blobs/sha256:nothex")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_delete_blob_unlinks_it(client: TestClient, blob: str) -> None:
    assert client.delete(blob).status_code == 202
    r = client.get(blob)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert client.delete(blob).status_code == 404


def test_path_tricks_are_name_invalid(client: TestClient) -> None:
    for path in (
        "/v2/team/%2e%2e/tags/list",
        "/v2/team//app/tags/list",
        "/v2/Team/app/tags/list",
        "/v2/a/b/c/tags/list",
        "/v2/app/tags/list",
        f"/v2/team/{'a' * 300}/tags/list",
    ):
        r = client.get(path)
        assert r.status_code == 400, path
        assert r.json()["errors"][0]["code"] == "NAME_INVALID"


def test_a_one_or_three_component_name_is_refused_naming_the_rule(client: TestClient) -> None:
    """Every answer that may carry a body says the rule; a blob HEAD (a push client's
    existence probe) answers 404 so the client goes on to the upload POST and shows it."""
    blob = f"blobs/{sha(b'x')}"
    for name in ("app", "team/sub/app"):
        for method, tail in (
            ("GET", "tags/list"),
            ("GET", "manifests/v1"),
            ("PUT", "manifests/v1"),
            ("DELETE", "manifests/v1"),
            ("GET", blob),
            ("DELETE", blob),
            ("POST", "blobs/uploads/"),
            ("PATCH", "blobs/uploads/some-id"),
            ("PUT", "blobs/uploads/some-id"),
            ("GET", "blobs/uploads/some-id"),
            ("DELETE", "blobs/uploads/some-id"),
            ("GET", f"referrers/{sha(b'x')}"),
        ):
            r = client.request(method, f"/v2/{name}/{tail}")
            assert r.status_code == 400, (method, name, tail)
            error = r.json()["errors"][0]
            assert error["code"] == "NAME_INVALID"
            assert error["message"].startswith("repository name must be <namespace>/<stream>")
            assert repr(name) in error["message"]
        assert client.head(f"/v2/{name}/{blob}").status_code == 404
        assert client.head(f"/v2/{name}/manifests/v1").status_code == 400


def test_unsupported_method(client: TestClient) -> None:
    r = client.post(f"/v2/{REPO}/tags/list")
    assert r.status_code == 405
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_blobs_being_garbage_collected_are_unknown(
    client: TestClient, services: Services, blob: str
) -> None:
    with services.db.write() as conn:
        conn.execute(update(blobs).where(blobs.c.digest == sha(DATA)).values(state="deleting"))
    r = client.get(blob)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    # Re-uploading it is refused too, so the client never relies on bytes GC is removing.
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(DATA)}, content=DATA)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    # A mount of it falls back to a normal upload session.
    r = client.post("/v2/team/other/blobs/uploads/", params={"mount": sha(DATA), "from": REPO})
    assert r.status_code == 202
