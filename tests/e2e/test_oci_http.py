"""The `/v2/` API over real HTTPS under Granian: the Bearer challenge and token dance a
client performs, zero-copy blob GET, ranged reads, HEAD headers and uploads."""

from __future__ import annotations

import base64
import re
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.e2e.oci_support import sha
from tests.support.server import RegistryProcess

BLOB = bytes(range(256)) * 1024  # 256 KiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("http") / "data") as process:
        yield process


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"user:{password}".encode()).decode()


def test_challenge_and_token_dance(server: RegistryProcess) -> None:
    with server.client() as anonymous:
        r = anonymous.get("/v2/")
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        realm = re.search(r'realm="([^"]+)"', challenge)
        assert realm is not None and realm.group(1) == f"{server.url}/v2/token"
        r = anonymous.get(
            realm.group(1),
            params=[("scope", "repository:team/app:pull,push"), ("service", "imageregistry")],
            headers={"Authorization": _basic(server.admin_token)},
        )
        assert r.status_code == 200
        token = r.json()["token"]
        assert r.json()["expires_in"] >= 60
        r = anonymous.get("/v2/", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


def test_upload_then_zero_copy_and_ranged_reads(server: RegistryProcess) -> None:
    with server.client(server.admin_token) as client:
        r = client.post("/v2/team/app/blobs/uploads/")
        assert r.status_code == 202
        r = client.patch(r.headers["location"], content=BLOB)
        assert r.status_code == 202 and r.headers["range"] == f"0-{len(BLOB) - 1}"
        r = client.put(r.headers["location"], params={"digest": sha(BLOB)})
        assert r.status_code == 201
        url = f"/v2/team/app/blobs/{sha(BLOB)}"
        r = client.get(url)
        assert r.status_code == 200 and r.content == BLOB
        assert r.headers["docker-content-digest"] == sha(BLOB)
        etag = f'"{sha(BLOB)}"'  # the digest, so every replica agrees
        assert r.headers["etag"] == etag
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(BLOB))
        assert head.headers["etag"] == etag
        for cached in (etag, f'"sha256:{"0" * 64}", W/{etag}', "*"):
            r = client.get(url, headers={"If-None-Match": cached, "Range": "bytes=0-9"})
            assert r.status_code == 304 and r.content == b"", cached
            assert r.headers["etag"] == etag
        r = client.get(url, headers={"If-None-Match": f'"sha256:{"0" * 64}"'})
        assert r.status_code == 200 and r.content == BLOB
        r = client.get(url, headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == BLOB[1000:2000]
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(BLOB)}"
        assert r.headers["etag"] == etag
        r = client.get(url, headers={"Range": f"bytes={len(BLOB)}-"})
        assert r.status_code == 416


def test_streamed_chunked_transfer_upload(server: RegistryProcess) -> None:
    def body() -> Iterator[bytes]:
        for start in range(0, len(BLOB), 10_000):
            yield BLOB[start : start + 10_000]

    with server.client(server.admin_token) as client:
        r = client.post("/v2/team/app/blobs/uploads/")
        location = r.headers["location"]
        r = client.put(location, params={"digest": sha(BLOB)}, content=body())
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/team/app/blobs/{sha(BLOB)}").content == BLOB


def test_truncated_upload_exposes_nothing(server: RegistryProcess) -> None:
    data = b"x" * 50_000
    with server.client(server.admin_token) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        # Claim more bytes than are sent, then hang up: the server must not publish.
        context = ssl.create_default_context(cafile=str(server.ca_file))
        with (
            socket.create_connection(("127.0.0.1", server.port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            head = (
                f"PUT {location}?digest={sha(data)} HTTP/1.1\r\n"
                f"Host: {server.host}\r\n"
                f"Authorization: Bearer {server.admin_token}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            )
            tls.sendall(head.encode() + data[:1000])
        assert client.get(f"/v2/team/app/blobs/{sha(data)}").status_code == 404
        r = client.put(location, params={"digest": sha(data)})
        # Whatever arrived is still staged; it does not hash to the digest.
        assert r.status_code in (400, 404, 409)
        assert client.get(f"/v2/team/app/blobs/{sha(data)}").status_code == 404


def test_encoded_path_tricks_are_name_invalid(server: RegistryProcess) -> None:
    with server.client(server.admin_token) as client:
        for path in ("/v2/team%2Fapp/tags/list", "/v2/team/%2e%2e/tags/list"):
            r = client.get(path)
            assert r.status_code == 400, path
            assert r.json()["errors"][0]["code"] == "NAME_INVALID"
