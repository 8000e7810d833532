"""The blob port (`blob_listen`): whole-blob pulls redirected to a sendfile(2) listener.

One two-worker plain-HTTP server for the module: links minted by either worker must work on
either worker, and every worker must listen on the blob port.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from imageregistry.blobport.links import BlobLinks
from imageregistry.content.digest import Digest
from tests.e2e.ac_support import ac
from tests.e2e.oci_support import blob_redirect, build_layout, push_blob, skopeo_round_trip
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess, refused_serve

REPO = "team/app"
BIG = os.urandom(3 * 1024 * 1024 + 17)
SMALL = os.urandom(100 * 1024)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_server(root: Path, workers: int = 1) -> RegistryProcess:
    return RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=["--workers", str(workers), "--blob-listen", f"127.0.0.1:{free_port()}"],
    )


def blob_port(server: RegistryProcess) -> int:
    return int(server.extra_args[-1].rsplit(":", 1)[1])


def push(server: RegistryProcess, data: bytes) -> str:
    with server.client(server.admin_token) as client:
        return push_blob(client, data, REPO)


def link(server: RegistryProcess, digest: str) -> str:
    with server.client(server.admin_token) as client:
        return blob_redirect(client, digest, REPO)


def minted(server: RegistryProcess, digest: str, now: float | None = None) -> str:
    """A link signed with the server's own key (read from its database), for what the
    main port would never hand out: a blob it does not hold, or an expired link."""
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        (key,) = db.execute("SELECT value FROM settings WHERE key = 'blob-link-key'").fetchone()
    clock = (lambda: now) if now is not None else time.time
    links = BlobLinks(bytes.fromhex(key), f"127.0.0.1:{blob_port(server)}", clock=clock)
    return links.url_for(Digest.parse(digest), "127.0.0.1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with blob_server(tmp_path_factory.mktemp("blobport"), workers=2) as process:
        yield process


@pytest.fixture(scope="module")
def big(server: RegistryProcess) -> str:
    return push(server, BIG)


@pytest.fixture(scope="module")
def small(server: RegistryProcess) -> str:
    return push(server, SMALL)


def test_whole_blob_pull_is_redirected_to_a_signed_link(server: RegistryProcess, big: str) -> None:
    with server.client(server.admin_token) as client:
        response = client.get(f"/v2/{REPO}/blobs/{big}")
        assert response.status_code == 307
        assert response.headers["docker-content-digest"] == big
        location = response.headers["location"]
        assert location.startswith(f"http://127.0.0.1:{blob_port(server)}/blobs/{big}?expires=")
        followed = client.get(f"/v2/{REPO}/blobs/{big}", follow_redirects=True)
    assert followed.content == BIG
    fetched = httpx.get(location)  # the link itself is the credential
    assert fetched.status_code == 200
    assert fetched.content == BIG
    assert fetched.headers["docker-content-digest"] == big
    assert fetched.headers["content-length"] == str(len(BIG))
    assert fetched.headers["content-type"] == "application/octet-stream"
    assert fetched.headers["etag"] == f'"{big}"'


def test_small_head_and_ranged_requests_stay_on_the_main_port(
    server: RegistryProcess, big: str, small: str
) -> None:
    with server.client(server.admin_token) as client:
        whole = client.get(f"/v2/{REPO}/blobs/{small}")
        head = client.head(f"/v2/{REPO}/blobs/{big}")
        ranged = client.get(f"/v2/{REPO}/blobs/{big}", headers={"Range": "bytes=5-9"})
    assert (whole.status_code, whole.content) == (200, SMALL)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(BIG)))
    assert (ranged.status_code, ranged.content) == (206, BIG[5:10])


def test_no_link_without_permission_to_pull(server: RegistryProcess, big: str) -> None:
    with server.client() as client:
        response = client.get(f"/v2/{REPO}/blobs/{big}")
    assert response.status_code == 401
    assert "location" not in response.headers
    with server.client(server.admin_token) as client:
        response = client.get(f"/v2/{REPO}/blobs/{sha(b'never pushed')}")
    assert response.status_code == 404
    assert "location" not in response.headers


def test_the_blob_port_answers_ranges_and_conditional_requests(
    server: RegistryProcess, big: str
) -> None:
    location = link(server, big)
    size = len(BIG)
    with httpx.Client() as client:
        middle = client.get(location, headers={"Range": "bytes=10-19"})
        suffix = client.get(location, headers={"Range": "bytes=-5"})
        beyond = client.get(location, headers={"Range": f"bytes={size}-"})
        cached = client.get(location, headers={"If-None-Match": f'"{big}"'})
        head = client.head(location)
    assert (middle.status_code, middle.content) == (206, BIG[10:20])
    assert middle.headers["content-range"] == f"bytes 10-19/{size}"
    assert (suffix.status_code, suffix.content) == (206, BIG[-5:])
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    assert beyond.json()["errors"][0]["code"] == "RANGE_INVALID"
    assert (cached.status_code, cached.content) == (304, b"")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(size)


def test_forged_expired_and_foreign_links_are_refused(
    server: RegistryProcess, big: str, small: str
) -> None:
    location = link(server, big)
    base = f"http://127.0.0.1:{blob_port(server)}"
    query = urlsplit(location).query
    tampered = location[:-2] + ("AA" if not location.endswith("AA") else "BB")
    cases = {
        tampered: (403, "DENIED"),
        f"{base}/blobs/{small}?{query}": (403, "DENIED"),  # another blob, this signature
        f"{base}/blobs/{big}": (403, "DENIED"),
        minted(server, big, now=time.time() - 3600): (403, "DENIED"),  # expired
        minted(server, sha(b"not stored")): (404, "BLOB_UNKNOWN"),
        f"{base}/v2/": (404, "NOT_FOUND"),
        f"{base}/blobs/sha256:zz?{query}": (404, "DIGEST_INVALID"),
        f"{base}/blobs/..%2f..%2fregistry.db?{query}": (404, "DIGEST_INVALID"),
    }
    with httpx.Client() as client:
        for url, (status, code) in cases.items():
            response = client.get(url)
            assert response.status_code == status, url
            assert response.json()["errors"][0]["code"] == code, url
        head = client.head(tampered)  # an error without a body, and the connection lives on
        assert (head.status_code, head.content) == (403, b"")
        post = client.post(location, content=b"x")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"
        assert client.get(location).content == BIG  # the good link still works


def test_one_connection_serves_request_after_request(server: RegistryProcess, big: str) -> None:
    url = urlsplit(link(server, big))
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        target = f"{url.path}?{url.query}"
        connection.request("GET", target)
        first = connection.getresponse()
        assert first.read() == BIG
        used = connection.sock
        connection.request("GET", target, headers={"Range": "bytes=0-3"})
        second = connection.getresponse()
        assert (second.status, second.read()) == (206, BIG[:4])
        assert connection.sock is used  # not reconnected
    finally:
        connection.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_hostile_clients_get_errors_and_leave_the_port_serving(
    server: RegistryProcess, big: str
) -> None:
    port = blob_port(server)
    assert raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge_head = b"GET /blobs/x HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    assert raw_exchange(port, huge_head).startswith(b"HTTP/1.1 431 ")
    url = urlsplit(link(server, big))
    with httpx.Client() as client:
        response = client.get(f"http://127.0.0.1:{port}{url.path}?{url.query}{'&a=1' * 40}")
    assert response.status_code == 400  # too many query fields
    request = f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for _ in range(5):  # walk away in the middle of the body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            assert sock.recv(1000)
    with httpx.Client() as client:
        assert client.get(link(server, big)).content == BIG


def test_every_worker_listens_and_accepts_any_workers_links(
    server: RegistryProcess, big: str
) -> None:
    port = blob_port(server)
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            listening.add(f"socket:[{fields[9]}]")
    workers = server.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert fds & listening, f"worker {pid} does not listen on the blob port"
    for _ in range(12):  # new main-port and blob-port connections each time
        with httpx.Client() as client:
            assert client.get(link(server, big)).content == BIG


def test_skopeo_pulls_large_layers_through_the_blob_port(
    server: RegistryProcess, tmp_path: Path
) -> None:
    layout = build_layout(tmp_path / "src", "blobport", layers=2, filler=2 * 1024 * 1024)
    skopeo_round_trip(server.host, server.admin_token, layout, "team/big:v1", tmp_path / "out")
    large = [d for d, data in layout.blobs.items() if len(data) > 1024 * 1024]
    assert len(large) == 2  # these went through the blob port


def test_sigterm_lets_a_transfer_in_flight_finish(tmp_path: Path) -> None:
    data = os.urandom(24 * 1024 * 1024)  # more than loopback buffers hold with a small window
    with blob_server(tmp_path) as process:
        url = urlsplit(link(process, push(process, data)))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # keep the server waiting
        sock.settimeout(20)
        sock.connect(("127.0.0.1", blob_port(process)))
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = sock.recv(65536)
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is shutting down while the body is still being sent
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        while chunk := sock.recv(1024 * 1024):
            received += chunk
        sock.close()
        assert process.proc.wait(timeout=20) == 0
    assert received.split(b"\r\n\r\n", 1)[1] == data


def test_blob_port_needs_plain_http_and_a_free_address(tmp_path: Path) -> None:
    def serve(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
        return refused_serve(tmp_path / "d", *flags, env={**os.environ, **env})

    port = free_port()
    tls = serve({"IMAGE_REGISTRY_BLOB_LISTEN": f"127.0.0.1:{port}"})
    assert tls.returncode != 0
    assert "blob_listen needs plain_http" in tls.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        result = serve({"IMAGE_REGISTRY_BLOB_LISTEN": busy}, "--plain-http")
    assert result.returncode != 0
    assert f"blob_listen {busy}: Address already in use" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was prepared


def test_ac_image_info_follows_the_link_for_a_large_config(
    server: RegistryProcess, tmp_path: Path
) -> None:
    padding = os.urandom(700 * 1024).hex()  # a config of 1.4 MB: redirected
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PADDING=" + padding]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    assert len(config) > 1024 * 1024
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push(server, config),
            "size": len(config),
        },
        "layers": [],
    }
    with server.client(server.admin_token) as client:
        response = client.put(
            f"/v2/{REPO}/manifests/big-config",
            content=json.dumps(manifest),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
    assert response.status_code == 201, response.text
    home = tmp_path / "home"
    ac(home, "login", server.url, "--token", server.admin_token)
    out = ac(home, "image", "info", f"{server.host}/{REPO}:big-config").stdout
    assert "OS:            linux" in out
    assert "PADDING=" in out
