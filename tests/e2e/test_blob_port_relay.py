"""The blob port relaying blobs from object storage (`blobport/relay.py`).

One plain-HTTP server with `--storage s3://...` on OpenStack Swift's s3api (a real S3
implementation on loopback), `storage_s3: {redirect: false}` and `--blob-listen`: a whole
blob of at least 1 MiB is redirected from the main port to the blob port, which makes the
bucket's presigned request itself and passes the answer on. Swift is reached through a
forwarding proxy (tests/support/s3proxy.py, not a mock: every request goes on to Swift
unchanged) that counts the requests and can be stopped to make the store unreachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.oci_support import blob_redirect, build_layout, push_blob, skopeo_round_trip
from tests.support.certs import Authority
from tests.support.postgres import free_port
from tests.support.s3proxy import S3Proxy
from tests.support.s3servers import S3Server, create_bucket, moto_server, swift_server
from tests.support.server import RegistryProcess

BUCKET = "relay-e2e"
PREFIX = "relayed"
REPO = "team/app"
BIG = os.urandom(5 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def swift() -> Iterator[S3Server]:
    with swift_server() as server:
        create_bucket(server, BUCKET)
        yield server


@pytest.fixture(scope="module")
def proxy(swift: S3Server) -> Iterator[S3Proxy]:
    with S3Proxy(swift.endpoint).running() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    swift: S3Server, proxy: S3Proxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("relay")
    process = relaying(root, swift, proxy, f"s3://{BUCKET}/{PREFIX}", part_size=5 << 20)
    with process.start(timeout=90):
        yield process


def relaying(
    root: Path, s3: S3Server, gateway: S3Proxy, storage: str, **block: object
) -> RegistryProcess:
    """A plain-HTTP server with its blob port on and `storage` (a bucket of `s3`, reached
    through `gateway`) with `redirect: false` plus the other `storage_s3` fields in `block`."""
    return RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=[*("--storage", storage), *("--blob-listen", f"127.0.0.1:{free_port()}")],
        env={
            **s3.env(),
            "AWS_ENDPOINT_URL": gateway.endpoint,
            "IMAGE_REGISTRY_STORAGE_S3": json.dumps({"redirect": False, **block}),
        },
    )


@pytest.fixture(scope="module")
def big(server: RegistryProcess) -> str:
    with server.client(server.admin_token) as client:
        return push_blob(client, BIG, REPO)


def link(server: RegistryProcess, digest: str) -> str:
    with server.client(server.admin_token) as client:
        return blob_redirect(client, digest, REPO)


def key_of(digest: str) -> str:
    return f"{PREFIX}/blobs/sha256/{digest[7:9]}/{digest[7:]}"


def asked(proxy: S3Proxy, since: int) -> list[tuple[str, str]]:
    return [(method, target.split("?")[0]) for method, target in proxy.requests[since:]]


def test_a_whole_blob_is_relayed_from_the_bucket_by_the_blob_port(
    server: RegistryProcess, big: str, proxy: S3Proxy
) -> None:
    before = len(proxy.requests)
    location = link(server, big)
    assert asked(proxy, before) == []  # the main port asked the store nothing
    assert urlsplit(location).port == int(server.extra_args[-1].rsplit(":", 1)[1])
    answer = httpx.get(location, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["docker-content-digest"] == big
    assert answer.headers["content-length"] == str(len(BIG))
    assert answer.content == BIG
    assert asked(proxy, before) == [("GET", f"/{BUCKET}/{key_of(big)}")]


def test_the_relay_answers_ranges_heads_and_conditional_requests(
    server: RegistryProcess, big: str
) -> None:
    location = link(server, big)
    with httpx.Client(timeout=60) as client:
        ranged = client.get(location, headers={"Range": "bytes=1048570-1048589"})
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes 1048570-1048589/{len(BIG)}"
        assert ranged.content == BIG[1048570:1048590]
        suffix = client.get(location, headers={"Range": "bytes=-7"})
        assert suffix.status_code == 206 and suffix.content == BIG[-7:]
        head = client.head(location)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(BIG))
        assert head.content == b""
        unchanged = client.get(location, headers={"If-None-Match": f'"{big}"'})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        beyond = client.get(location, headers={"Range": f"bytes={len(BIG)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(BIG)}"
        again = client.get(location)  # the same connection, after all of the above
        assert again.status_code == 200 and again.content == BIG


def test_skopeo_pulls_large_layers_through_the_relay(
    server: RegistryProcess, tmp_path: Path
) -> None:
    layout = build_layout(tmp_path / "src", "relay", layers=2, filler=3 * 1024 * 1024)
    skopeo_round_trip(server.host, server.admin_token, layout, "team/big:v1", tmp_path / "out")
    assert len([data for data in layout.blobs.values() if len(data) > 1024 * 1024]) == 2


def test_a_client_gone_mid_body_leaves_the_port_serving(server: RegistryProcess, big: str) -> None:
    url = urlsplit(link(server, big))
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=20) as sock:
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    answer = httpx.get(link(server, big), timeout=60)
    assert answer.status_code == 200 and answer.content == BIG


def test_a_blob_damaged_in_the_bucket_is_refused_never_sent_short(
    server: RegistryProcess, swift: S3Server
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    with server.client(server.admin_token) as client:
        digest = push_blob(client, data, REPO)
    location = link(server, digest)
    swift.client().put_object(Bucket=BUCKET, Key=key_of(digest), Body=data[:-1])
    for headers in ({}, {"Range": "bytes=0-9"}, {"Range": f"bytes={len(data) - 1}-"}):
        refused = httpx.get(location, headers=headers, timeout=60)
        assert refused.status_code == 404, headers
        error = refused.json()["errors"][0]
        assert error["code"] == "BLOB_UNKNOWN" and "damaged" in error["message"]
    assert f"blob {digest} has {len(data) - 1} bytes in storage" in server.log_text()


def test_an_unreachable_store_answers_503_with_retry_after(swift: S3Server, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    with contextlib.ExitStack() as outage:
        gateway = outage.enter_context(S3Proxy(swift.endpoint).running())
        storage = f"s3://{BUCKET}/unreachable-{os.getpid()}"
        process = relaying(tmp_path, swift, gateway, storage)
        with process.start(timeout=90), process.client(process.admin_token) as client:
            digest = push_blob(client, data, REPO)
            location = link(process, digest)
            assert httpx.get(location, timeout=60).content == data
            outage.close()  # the proxy stops: nothing answers at the store's address
            refused = httpx.get(location, timeout=60)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "10"
            assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
            log = process.log_text()
            assert f"the object store failed while relaying blob {digest}" in log
            assert "X-Amz-Signature" not in log  # the presigned URL is never logged


def test_pulls_from_a_store_behind_tls_with_its_own_ca(tmp_path: Path) -> None:
    """moto (an emulator) behind the forwarding proxy speaking TLS with a certificate from a
    CA the test makes, named by `storage_s3.ca_bundle`: a small blob streamed by the main
    port and a large one relayed by the blob port both come over that TLS."""
    authority = Authority.create(tmp_path, "store-ca")
    cert, key = authority.server(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    small, large = os.urandom(200 * 1024), os.urandom(3 * 1024 * 1024)
    with moto_server() as moto, S3Proxy(moto.endpoint, tls).running() as gateway:
        create_bucket(moto, "tls-store")
        process = relaying(
            tmp_path, moto, gateway, "s3://tls-store/r", ca_bundle=str(authority.path)
        )
        assert gateway.endpoint.startswith("https://")
        with process.start(timeout=90), process.client(process.admin_token) as client:
            streamed = client.get(f"/v2/{REPO}/blobs/{push_blob(client, small, REPO)}")
            assert streamed.status_code == 200 and streamed.content == small
            location = blob_redirect(client, push_blob(client, large, REPO), REPO)
            relayed = httpx.get(location, timeout=60)
            assert relayed.status_code == 200 and relayed.content == large
        assert any(method == "GET" and "/blobs/" in target for method, target in gateway.requests)
