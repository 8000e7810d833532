"""The blob port's requests and the main port's redirects to it are counted: a pull of a
large blob is one redirect on the main port plus one `blobport` GET whose body bytes are
the blob's, and the request body of the push is counted as received. `metrics_listen`
serves the same figures in plain HTTP with the main port's authorization."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.oci_support import push_blob
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess

BIG = os.urandom(2 * 1024 * 1024 + 5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("metrics-blobport")
    with RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=[
            "--workers",
            "2",
            "--blob-listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
        ],
    ) as process:
        yield process


def samples(server: RegistryProcess) -> dict[str, float]:
    with server.client(server.admin_token) as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    out = {}
    for line in reply.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_redirected_pull_is_counted_on_both_ports(server: RegistryProcess) -> None:
    with server.client(server.admin_token) as client:
        digest = push_blob(client, BIG)
        redirect = client.get(f"/v2/team/app/blobs/{digest}")
        assert redirect.status_code == 307
    pulled = httpx.get(redirect.headers["location"], timeout=60)
    assert pulled.status_code == 200 and pulled.content == BIG

    # Each worker writes its counts every second, and a request's count and its bytes may
    # land in different writes (the upload and the GET may be different workers'): poll until
    # the blob port's GET, its bytes and the upload's bytes all show.
    port = '{route="/blobs/{digest}",surface="blobport"}'
    get = '{code="200",method="GET",route="/blobs/{digest}",surface="blobport"}'
    upload = '{route="/v2/{name}/blobs/uploads/",surface="oci"}'
    sent = f"imageregistry_http_response_body_bytes_total{port}"
    received = f"imageregistry_http_request_body_bytes_total{upload}"
    deadline = time.monotonic() + 60
    seen = samples(server)
    while (
        seen.get(f"imageregistry_http_requests_total{get}") != 1
        or not seen.get(sent)
        or not seen.get(received)
    ):
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
        seen = samples(server)
    assert seen["imageregistry_blob_redirects_total"] == 1
    assert seen[f"imageregistry_http_requests_total{get}"] == 1
    assert seen[f"imageregistry_http_response_body_bytes_total{port}"] == len(BIG)
    assert seen[f"imageregistry_http_request_body_bytes_total{upload}"] == len(BIG)
    assert seen['imageregistry_storage_operations_total{operation="commit_upload"}'] >= 1


def test_metrics_listen_serves_the_same_figures_to_the_same_callers(
    server: RegistryProcess,
) -> None:
    listen = server.extra_args[-1]
    url = f"http://{listen}/metrics"
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    for _ in range(6):  # new connections: the kernel spreads them over both workers
        reply = httpx.get(url, headers=admin, timeout=30)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "imageregistry_http_requests_total" in reply.text
    main = samples(server)
    here = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in httpx.get(url, headers=admin, timeout=30).text.splitlines()
        if line and not line.startswith("#")
    }
    key = "imageregistry_blob_redirects_total"
    assert here[key] == main[key]
    anonymous = httpx.get(url, timeout=30)
    assert anonymous.status_code == 403
    assert anonymous.json()["kind"] == "Status"
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert httpx.get(f"http://{listen}/v2/", headers=admin, timeout=30).status_code == 404
