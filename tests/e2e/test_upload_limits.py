"""Caps on abandoned uploads: one identity opening sessions (or
staging bytes) without end gets 429 `TOOMANYREQUESTS` with `Retry-After`, while other
identities keep pushing. The flood is replayed against a server with small caps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.kubectl_support import add_user_token
from tests.support.server import RegistryProcess

MAX_OPEN = 5
MAX_BYTES = 1 << 20
REPO = "team/flood"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    env = {
        "IMAGE_REGISTRY_UPLOAD_MAX_OPEN_PER_USER": str(MAX_OPEN),
        "IMAGE_REGISTRY_UPLOAD_MAX_STAGED_BYTES_PER_USER": str(MAX_BYTES),
    }
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("caps") / "data", env=env) as proc:
        yield proc


def user(server: RegistryProcess, name: str) -> httpx.Client:
    return server.client(add_user_token(server, name, ("system:masters",)), timeout=60.0)


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(response.headers["retry-after"]) > 0


def start(client: httpx.Client, repo: str = REPO) -> httpx.Response:
    return client.post(f"/v2/{repo}/blobs/uploads/")


def test_a_flood_of_abandoned_sessions_is_capped_per_identity(server: RegistryProcess) -> None:
    with user(server, "mallory") as mallory, user(server, "alice") as alice:
        opened = [start(mallory, f"team/flood-{i}") for i in range(MAX_OPEN)]
        assert [r.status_code for r in opened] == [202] * MAX_OPEN
        for _ in range(3):  # and again: nothing more piles up
            refused = start(mallory)
            assert_limited(refused)
            assert "upload_max_open_per_user" in refused.json()["errors"][0]["message"]
        uploads = server.data_dir / "blobs" / "uploads"
        assert len(list(uploads.iterdir())) == MAX_OPEN  # refused ones left no staging dir
        assert start(alice).status_code == 202  # another identity is not affected
        data = b"mallory's blob"
        monolithic = mallory.post(
            f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(data)}, content=data
        )
        assert monolithic.status_code == 201  # no session left open: not capped
        assert mallory.delete(opened[0].headers["location"]).status_code == 204
        assert start(mallory).status_code == 202  # room again after a cancel


def test_staged_bytes_are_capped_per_identity(server: RegistryProcess) -> None:
    with user(server, "bulk") as bulk, user(server, "other") as other:
        first, second = start(bulk).headers["location"], start(bulk).headers["location"]
        big = os.urandom(600 * 1024)
        staged = bulk.patch(first, content=big)
        assert staged.status_code == 202
        assert_limited(bulk.patch(second, content=big))  # declared length beyond the room
        streamed = bulk.patch(second, content=iter([big[:300_000], big[300_000:]]))
        assert_limited(streamed)  # no length: cut off at the room, the chunk not kept
        assert bulk.get(second).headers["range"] == "0-0"
        assert other.patch(start(other).headers["location"], content=big).status_code == 202
        done = bulk.put(staged.headers["location"], params={"digest": sha(big)})
        assert done.status_code == 201  # committing frees the identity's room
        again = bulk.patch(second, content=big)
        assert again.status_code == 202, again.text
