"""The front-proxy contract's CA, allowed names and header names read from the cluster.

In cluster mode without `requestheader_client_ca_file`, the registry reads them from the
ConfigMap `kube-system/extension-apiserver-authentication`, as kube's extension API
servers do (docs/operations.md, "The image API as an aggregated API"). Our own server does
not serve ConfigMaps, so the "cluster" here is a FAKE: a small loopback HTTP server in this
test (`FakeCluster`) answering that GET with the shape kube-apiserver gives it (PEM under
`requestheader-client-ca-file`, JSON lists under `requestheader-allowed-names`,
`-username-headers`, `-group-headers`, `-extra-headers-prefix`), refusing every token
(TokenReview) and allowing only `alice` (SubjectAccessReview), so an anonymous
SelfSubjectReview is refused. The registry is a real server process; the client
certificates are real, signed by the CA the fake publishes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_aggregated_api import Setup, whoami
from tests.support.certs import Authority
from tests.support.kubeconfig import token_kubeconfig
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess, refused_serve

pytestmark = pytest.mark.timeout(300)

CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
PROXY_NAME = "front-proxy-client"
OWN_TOKEN = "registry-own-token"


@dataclass
class FakeCluster:
    """FAKE kube-apiserver: the ConfigMap it holds, reviews as the module doc says."""

    ca_pem: str
    status: int = 200
    gets: list[str] = field(default_factory=list)  # Authorization of each ConfigMap GET
    lock: threading.Lock = field(default_factory=threading.Lock)

    def configmap(self) -> tuple[int, bytes]:
        if self.status != 200:
            body = {"kind": "Status", "code": self.status, "message": "configmaps is forbidden"}
            return self.status, json.dumps(body).encode()
        data = {
            "client-ca-file": "(the cluster's client CA, not the front proxy's)",
            "requestheader-client-ca-file": self.ca_pem,
            "requestheader-allowed-names": json.dumps([PROXY_NAME]),
            "requestheader-username-headers": json.dumps(["X-Proxy-User"]),
            "requestheader-group-headers": json.dumps(["X-Proxy-Group"]),
            "requestheader-extra-headers-prefix": json.dumps(["X-Proxy-Extra-"]),
        }
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": data,
        }
        return 200, json.dumps(configmap).encode()

    def review(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if path.endswith("/tokenreviews"):
            body["status"] = {"user": {}, "error": "invalid bearer token"}
        elif path.endswith("/subjectaccessreviews"):
            body["status"] = {"allowed": body["spec"].get("user") == "alice"}
        else:
            return 404, b'{"kind":"Status","code":404}'
        return 201, json.dumps(body).encode()


def _serve(cluster: FakeCluster) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path != CONFIGMAP:
                self._send(404, b'{"kind":"Status","code":404}')
                return
            with cluster.lock:
                cluster.gets.append(self.headers.get("Authorization", ""))
            self._send(*cluster.configmap())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self._send(*cluster.review(self.path, json.loads(self.rfile.read(length))))

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _args(root: Path, url: str, front_port: int) -> list[str]:
    """Cluster mode against the fake at `url` (its kubeconfig written under `root`), with
    the front-proxy port on `front_port`."""
    kubeconfig = token_kubeconfig(root / "cluster.kubeconfig", url, OWN_TOKEN)
    return [
        "--auth-mode",
        "kubernetes",
        "--cluster-kubeconfig",
        str(kubeconfig),
        "--front-proxy-listen",
        f"127.0.0.1:{front_port}",
    ]


def test_the_request_header_ca_and_names_come_from_the_clusters_configmap(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cluster_ca, next_ca = Authority.create(certs, "front-proxy-ca"), Authority.create(certs, "next")
    cluster = FakeCluster(cluster_ca.path.read_text())
    httpd, url = _serve(cluster)
    front_port = free_port()
    try:
        server = RegistryProcess(
            data_dir=tmp_path / "data",
            extra_args=_args(tmp_path, url, front_port),
        )
        with server:
            proxy = cluster_ca.client(certs, PROXY_NAME)
            other = cluster_ca.client(certs, "not-the-proxy")
            setup = Setup(server, front_port, proxy, other, other, tmp_path)
            as_alice = [("X-Proxy-User", "alice"), ("X-Proxy-Group", "developers")]
            with setup.front(proxy) as client:
                user = whoami(client, as_alice)
                assert user["username"] == "alice"
                assert user["groups"] == ["developers", "system:authenticated"]
                # the ConfigMap names the headers: the defaults are not the contract's here
                assert whoami(client, [("X-Remote-User", "alice")])["username"] == (
                    "system:anonymous"
                )
            with setup.front(other) as client:  # a name the ConfigMap does not allow
                assert whoami(client, as_alice)["username"] == "system:anonymous"
            with setup.front() as client:  # no certificate
                assert whoami(client, as_alice)["username"] == "system:anonymous"
            with cluster.lock:
                assert cluster.gets and set(cluster.gets) == {f"Bearer {OWN_TOKEN}"}

            # The cluster rotates its request-header CA: re-read without a restart.
            cluster.ca_pem = next_ca.path.read_text()
            rotated = next_ca.client(certs, PROXY_NAME)
            deadline = time.monotonic() + 90
            while True:
                try:
                    with setup.front(rotated) as client:
                        if whoami(client, as_alice)["username"] == "alice":
                            break
                except httpx.TransportError:
                    pass  # the handshake does not trust the new CA yet
                assert time.monotonic() < deadline, "the rotated CA was never honoured"
                time.sleep(1)
            with setup.front(proxy) as client:
                assert whoami(client, as_alice)["username"] == "system:anonymous"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_serve_refuses_when_the_configmap_cannot_be_read(tmp_path: Path) -> None:
    """The registry's service account lacks the Role that reads the ConfigMap: `serve`
    stops at once and says which ConfigMap and what the cluster answered."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cluster = FakeCluster(Authority.create(certs, "ca").path.read_text(), status=403)
    httpd, url = _serve(cluster)
    try:
        result = refused_serve(
            tmp_path / "data",
            *_args(tmp_path, url, free_port()),
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode != 0
    assert "ConfigMap kube-system/extension-apiserver-authentication" in result.stderr
    assert "HTTP 403: configmaps is forbidden" in result.stderr
    assert not (tmp_path / "data" / "registry.db").exists()  # refused before preparing
