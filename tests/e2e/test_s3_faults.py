"""Object-store faults a client notices: a store that accepts connections and then does
not answer (a TCP proxy that stops forwarding, in front of moto, an S3 *emulator*, and
of OpenStack Swift's s3api).

Requests that need the store answer `503 UNAVAILABLE` with `Retry-After` once
`storage_s3.timeout_seconds` has passed, the log names the operation, nothing becomes
half-visible, and once the store answers again the client's retry succeeds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.replicas import S3_KINDS, s3_server
from tests.support.s3servers import S3Server, create_bucket
from tests.support.server import RegistryProcess
from tests.support.stallproxy import StallingProxy, stalling_proxy

BUCKET = "stalls"


@pytest.fixture(scope="module", params=S3_KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    with s3_server(str(request.param)) as server:
        create_bucket(server, BUCKET)
        yield server


@pytest.fixture(scope="module")
def proxy(store: S3Server) -> Iterator[StallingProxy]:
    with stalling_proxy(store.endpoint) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    store: S3Server, proxy: StallingProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    process = RegistryProcess(
        data_dir=tmp_path_factory.mktemp("stalls") / "data",
        extra_args=["--storage", f"s3://{BUCKET}/r"],
        env={
            **store.env(),
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "IMAGE_REGISTRY_STORAGE_S3": json.dumps({"timeout_seconds": 2}),
        },
    )
    with process.start(timeout=90):
        yield process


def test_a_store_that_stops_answering_gets_503_and_the_retry_succeeds(
    server: RegistryProcess, proxy: StallingProxy
) -> None:
    stored = b"stored before the store stalled"
    stored_digest = "sha256:" + hashlib.sha256(stored).hexdigest()
    data = os.urandom(64 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with server.client(server.admin_token, timeout=300) as client:
        pushed = client.post(
            "/v2/team/app/blobs/uploads/", params={"digest": stored_digest}, content=stored
        )
        assert pushed.status_code == 201, pushed.text
        started = client.post("/v2/team/app/blobs/uploads/")
        assert started.status_code == 202, started.text
        patched = client.patch(
            started.headers["location"],
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert patched.status_code == 202, patched.text
        location = patched.headers["location"]
        proxy.stall()
        try:
            head = client.head(f"/v2/team/app/blobs/{stored_digest}")
            commit = client.put(location, params={"digest": digest})
            for answer in (head, commit):
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "10"
            assert commit.json()["errors"][0]["code"] == "UNAVAILABLE"
        finally:
            proxy.resume()
        # Nothing of the interrupted commit is visible; the client's retry completes it.
        assert client.head(f"/v2/team/app/blobs/{digest}").status_code == 404
        retried = client.put(location, params={"digest": digest})
        assert retried.status_code == 201, retried.text
        pulled = client.get(f"/v2/team/app/blobs/{digest}", follow_redirects=True)
        assert pulled.content == data
    log = server.log_text()
    expected = f"object store s3://{BUCKET}/r failed during stat: timed out"
    assert f"{expected} (storage_s3.timeout_seconds)" in log


def test_timeout_seconds_out_of_range_is_refused_at_start(tmp_path: Path) -> None:
    process = RegistryProcess(
        data_dir=tmp_path / "data",
        extra_args=["--storage", f"s3://{BUCKET}/r"],
        env={"IMAGE_REGISTRY_STORAGE_S3": json.dumps({"timeout_seconds": 0})},
    )
    with pytest.raises(RuntimeError, match="exited early"):
        process.start(timeout=60)
    log = (tmp_path / f"server-{process.port}.log").read_text()
    assert "storage_s3.timeout_seconds: expected 1 to 3600" in log
