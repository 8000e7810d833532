"""Blob upload endpoints: every flow clients use and every error status of the spec."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from imageregistry.content.digest import Digest
from imageregistry.metadata.gc_queries import SqlGcStore
from imageregistry.services import Services
from tests.unit.oci.conftest import REPO, sha

DATA = b"0123456789abcdef" * 64


def start(client: TestClient, repo: str = REPO) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    assert r.headers["range"] == "0-0"
    assert r.headers["docker-upload-uuid"]
    location = str(r.headers["location"])
    assert location == f"/v2/{repo}/blobs/uploads/{r.headers['docker-upload-uuid']}"
    return location


def test_monolithic_post_with_digest(client: TestClient) -> None:
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(DATA)}, content=DATA)
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{REPO}/blobs/{sha(DATA)}"
    assert r.headers["docker-content-digest"] == sha(DATA)
    assert client.get(f"/v2/{REPO}/blobs/{sha(DATA)}").content == DATA


def test_post_then_put(client: TestClient) -> None:
    location = start(client)
    r = client.put(location, params={"digest": sha(DATA)}, content=DATA)
    assert r.status_code == 201
    assert client.head(f"/v2/{REPO}/blobs/{sha(DATA)}").headers["content-length"] == str(len(DATA))


def test_streamed_patch_then_empty_put_like_skopeo(client: TestClient) -> None:
    location = start(client)
    r = client.patch(location, content=DATA)
    assert r.status_code == 202
    assert r.headers["range"] == f"0-{len(DATA) - 1}"
    location = r.headers["location"]
    r = client.put(location + f"?digest={sha(DATA).replace(':', '%3A')}")
    assert r.status_code == 201, r.text


def test_chunked_upload_survives_an_out_of_order_chunk(client: TestClient) -> None:
    location = start(client)
    first, second = DATA[:100], DATA[100:]
    r = client.patch(
        location,
        content=first,
        headers={
            "Content-Range": f"0-{len(first) - 1}",
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 202 and r.headers["range"] == "0-99"
    r = client.patch(
        location, content=second, headers={"Content-Range": f"200-{199 + len(second)}"}
    )
    assert r.status_code == 416
    assert r.headers["range"] == "0-99"
    assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    r = client.get(location)
    assert r.status_code == 204 and r.headers["range"] == "0-99"
    r = client.patch(location, content=second, headers={"Content-Range": f"100-{len(DATA) - 1}"})
    assert r.status_code == 202
    r = client.put(location, params={"digest": sha(DATA)})
    assert r.status_code == 201
    assert client.get(f"/v2/{REPO}/blobs/{sha(DATA)}").content == DATA


def test_final_chunk_in_put_with_content_range(client: TestClient) -> None:
    location = start(client)
    client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    r = client.put(
        location,
        params={"digest": sha(DATA)},
        content=DATA[10:],
        headers={"Content-Range": f"10-{len(DATA) - 1}"},
    )
    assert r.status_code == 201


def test_content_length_disagreeing_with_content_range_is_416(client: TestClient) -> None:
    location = start(client)
    r = client.patch(location, content=b"abc", headers={"Content-Range": "0-9"})
    assert r.status_code == 416
    assert client.get(location).headers["range"] == "0-0"


def test_digest_mismatch_keeps_nothing(client: TestClient) -> None:
    location = start(client)
    wrong = sha(b"something else")
    r = client.put(location, params={"digest": wrong}, content=DATA)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.head(f"/v2/{REPO}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{REPO}/blobs/{sha(DATA)}").status_code == 404
    assert client.get(location).status_code == 404  # the session ended


def test_monolithic_digest_mismatch(client: TestClient) -> None:
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(b"x")}, content=DATA)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.head(f"/v2/{REPO}/blobs/{sha(b'x')}").status_code in (404,)


def test_invalid_and_unsupported_digests(client: TestClient) -> None:
    location = start(client)
    for bad in ("sha256:abc", "md5:" + "0" * 32, "nonsense", "SHA256:" + "0" * 64):
        r = client.put(location, params={"digest": bad}, content=DATA)
        assert r.status_code == 400, bad
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    r = client.put(location)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_sha512_blobs(client: TestClient) -> None:
    import hashlib

    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert r.status_code == 201
    assert client.get(f"/v2/{REPO}/blobs/{digest}").content == DATA


def test_unknown_upload_ids(client: TestClient) -> None:
    for upload in ("00000000-0000-0000-0000-000000000000", "x.y", "a%2Fb"):
        url = f"/v2/{REPO}/blobs/uploads/{upload}"
        assert client.get(url).status_code == 404
        r = client.patch(url, content=b"x")
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert client.put(url, params={"digest": sha(b"x")}, content=b"x").status_code == 404
        assert client.delete(url).status_code == 404


def test_upload_of_another_repository_is_unknown(client: TestClient) -> None:
    location = start(client, "team/other")
    uuid = location.rsplit("/", 1)[1]
    r = client.patch(f"/v2/{REPO}/blobs/uploads/{uuid}", content=b"x")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_cancel_upload(client: TestClient) -> None:
    location = start(client)
    client.patch(location, content=DATA)
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 404
    r = client.put(location, params={"digest": sha(DATA)})
    assert r.status_code == 404


def test_cross_repository_mount(client: TestClient) -> None:
    client.post("/v2/team/src/blobs/uploads/", params={"digest": sha(DATA)}, content=DATA)
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"mount": sha(DATA), "from": "team/src"})
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{REPO}/blobs/{sha(DATA)}"
    assert client.get(f"/v2/{REPO}/blobs/{sha(DATA)}").content == DATA


def test_mount_falls_back_to_a_session(client: TestClient) -> None:
    # Unknown source blob, missing `from`, and an unreadable source all answer 202.
    for params in (
        {"mount": sha(b"nope"), "from": "team/src"},
        {"mount": sha(DATA)},
        {"mount": sha(DATA), "from": "not a repo"},
    ):
        r = client.post(f"/v2/{REPO}/blobs/uploads/", params=params)
        assert r.status_code == 202, params
        assert r.headers["location"].startswith(f"/v2/{REPO}/blobs/uploads/")


def test_blob_pushed_in_one_repository_is_not_readable_in_another(client: TestClient) -> None:
    client.post("/v2/team/src/blobs/uploads/", params={"digest": sha(DATA)}, content=DATA)
    client.post("/v2/team/dst/blobs/uploads/", params={"digest": sha(b"x")}, content=b"x")
    r = client.get(f"/v2/team/dst/blobs/{sha(DATA)}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_an_upload_during_a_gc_sweep_of_the_same_blob_waits_for_it(
    client: TestClient, services: Services
) -> None:
    """A GC sweep has marked the blob `deleting` and not yet deleted its bytes and row
    when a client uploads the same digest again: the commit waits for the sweep, then
    publishes the new bytes, instead of answering BLOB_UNKNOWN (the upload would have
    been lost to the sweep)."""
    blob = sha(DATA)
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": blob}, content=DATA)
    assert r.status_code == 201
    gc = SqlGcStore(services.db, timedelta(0))
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert [c.digest for c in gc.mark_deleting(now, 100)] == [blob]

    def finish_sweep() -> None:  # what the sweep does next: bytes, then rows
        time.sleep(0.5)
        asyncio.run(services.blobs.delete(Digest.parse(blob)))
        gc.forget_blobs([blob], now)

    sweeper = threading.Thread(target=finish_sweep)
    sweeper.start()
    try:
        again = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": blob}, content=DATA)
    finally:
        sweeper.join()
    assert again.status_code == 201, again.text
    assert client.get(f"/v2/{REPO}/blobs/{blob}").content == DATA
