"""Cluster mode when the cluster misbehaves: never an allow, never a cached error.

The "cluster" here is a FAKE: a small loopback HTTP server in this test (`FakeCluster`)
that answers `TokenReview` and `SubjectAccessReview` posts the way a test step tells it
to — correctly, with malformed JSON, with a review lacking its decision, with HTTP 500,
or too slowly. It stands in for a kube-apiserver, which cannot run on this machine; the
end-to-end test with real reviews is tests/e2e/test_cluster_mode.py. The registry is a
real server process in `--auth-mode kubernetes` whose `--cluster-kubeconfig` points at
the fake; requests are real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.kubeconfig import token_kubeconfig
from tests.support.server import RegistryProcess

GOOD_TOKEN = "good-alice"  # the fake accepts every token starting with "good-"
SA_USER = "system:serviceaccount:team-a:alice"
TIMEOUT_SECONDS = 1  # cluster_timeout_seconds of the registry; the slow fake waits longer


@dataclass
class FakeCluster:
    """FAKE kube-apiserver: answers reviews as `tokenreview`/`sar` say (see module doc)."""

    # ok | reject | malformed-json | no-user | 500 | slow | delayed | wrong-aud
    tokenreview: str = "ok"
    # allow | deny | malformed-json | no-allowed | string-allowed | 500 | slow | delayed
    sar: str = "allow"
    seen: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        with self.lock:
            self.seen.append(body)
        if path.endswith("/tokenreviews"):
            return self._tokenreview(body)
        if path.endswith("/subjectaccessreviews"):
            return self._sar(body)
        return 404, b'{"kind":"Status","code":404}'

    def _slow(self) -> None:
        time.sleep(TIMEOUT_SECONDS * 4)

    def _tokenreview(self, body: dict[str, Any]) -> tuple[int, bytes]:
        mode = self.tokenreview
        review: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": None},
            "spec": {"audiences": body["spec"].get("audiences", [])},
        }
        if mode == "slow":
            self._slow()
        if mode == "delayed":  # a busy but working cluster, within the registry's timeout
            time.sleep(TIMEOUT_SECONDS / 2)
        if mode == "500":
            return 500, b'{"kind":"Status","code":500,"message":"etcd is down"}'
        if mode == "malformed-json":
            return 201, b'{"kind": "TokenReview", "status": {"authenticated": tru'
        if not str(body["spec"].get("token")).startswith("good-") or mode == "reject":
            review["status"] = {"user": {}, "error": "invalid bearer token"}
        elif mode == "no-user":
            review["status"] = {"authenticated": True}
        else:
            auds = ["someone-else"] if mode == "wrong-aud" else body["spec"].get("audiences", [])
            review["status"] = {
                "authenticated": True,
                "user": {
                    "username": SA_USER,
                    "uid": "4f1d",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
                },
                "audiences": auds,
            }
        return 201, json.dumps(review).encode()

    def _sar(self, body: dict[str, Any]) -> tuple[int, bytes]:
        mode = self.sar
        if mode == "slow":
            self._slow()
        if mode == "delayed":
            time.sleep(TIMEOUT_SECONDS / 2)
            mode = "allow"
        if mode == "500":
            return 500, b'{"kind":"Status","code":500,"message":"internal error"}'
        if mode == "malformed-json":
            return 201, b"<html>gateway</html>"
        review: dict[str, Any] = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
        }
        review["spec"] = body["spec"]
        if mode == "no-allowed":
            review["status"] = {"reason": "no decision here"}
        elif mode == "string-allowed":
            review["status"] = {"allowed": "true"}
        else:
            review["status"] = {"allowed": mode == "allow"}
        return 201, json.dumps(review).encode()

    def reviews(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.seen if b.get("kind") == kind]


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeCluster, str]]:
    cluster = FakeCluster()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with cluster.lock:
                cluster.auth_headers.append(self.headers.get("Authorization", ""))
            status, payload = cluster.answer(self.path, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the registry gave up waiting (the slow modes)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def registry(
    fake: tuple[FakeCluster, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    _cluster, url = fake
    root = tmp_path_factory.mktemp("cluster-faults")
    kubeconfig = token_kubeconfig(root / "cluster.kubeconfig", url, "registry-own-token")
    env = {
        "IMAGE_REGISTRY_CLUSTER_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "IMAGE_REGISTRY_CLUSTER_AUDIENCES": "registry.example",
        # Long lifetimes: a test that sees a changed answer proves nothing was cached.
        "IMAGE_REGISTRY_CLUSTER_AUTHN_CACHE_TTL_SECONDS": "600",
        "IMAGE_REGISTRY_CLUSTER_AUTHN_FAILURE_CACHE_TTL_SECONDS": "600",
        "IMAGE_REGISTRY_CLUSTER_AUTHZ_ALLOWED_TTL_SECONDS": "600",
        "IMAGE_REGISTRY_CLUSTER_AUTHZ_DENIED_TTL_SECONDS": "600",
    }
    args = ["--auth-mode", "kubernetes", "--cluster-kubeconfig", str(kubeconfig)]
    with RegistryProcess(data_dir=root / "data", extra_args=args, env=env) as proc:
        yield proc


def _catalog(registry: RegistryProcess, token: str) -> httpx.Response:
    """A registry request that needs both reviews (`list imagestreams`, cluster-wide)."""
    with registry.client(token) as client:
        return client.get("/v2/_catalog", timeout=60)


def _set(cluster: FakeCluster, tokenreview: str = "ok", sar: str = "allow") -> None:
    cluster.tokenreview, cluster.sar = tokenreview, sar


@pytest.mark.parametrize("mode", ["malformed-json", "no-user", "500", "slow"])
def test_a_failed_tokenreview_is_503_and_not_remembered(
    registry: RegistryProcess, fake: tuple[FakeCluster, str], mode: str
) -> None:
    cluster, _ = fake
    token = f"good-{mode}"  # a token of its own: no earlier answer is cached for it
    _set(cluster, tokenreview=mode)
    before = len(cluster.reviews("TokenReview"))
    r = _catalog(registry, token)
    assert r.status_code == 503, r.text
    error = r.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "cluster" in error["message"]
    assert r.headers.get("Retry-After")
    assert len(cluster.reviews("TokenReview")) > before
    # The cluster recovers: the next request asks again (nothing was cached) and gets in.
    _set(cluster)
    r = _catalog(registry, token)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("mode", ["malformed-json", "no-allowed", "string-allowed", "500", "slow"])
def test_a_failed_subjectaccessreview_is_503_never_an_allow(
    registry: RegistryProcess, fake: tuple[FakeCluster, str], mode: str
) -> None:
    cluster, _ = fake
    _set(cluster, sar=mode)
    path = f"/v2/{mode.replace('-', '')}/demo/tags/list"  # a decision of its own per case
    with registry.client(f"good-sar-{mode}") as client:
        r = client.get(path, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        # The signature extension asks the same question and fails the same way.
        digest = "sha256:" + "0" * 64
        r = client.get(f"/extensions{path.rsplit('/tags', 1)[0]}/signatures/{digest}")
        assert r.status_code == 503, r.text
        # Not cached: once the cluster answers "denied", that is what the client gets.
        _set(cluster, sar="deny")
        r = client.get(path, timeout=60)
        assert r.status_code == 403, r.text
        assert r.json()["errors"][0]["code"] == "DENIED"


def test_a_cached_allow_is_honoured_while_the_cluster_fails(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster)
    path = "/v2/cached/demo/tags/list"
    with registry.client("good-cached") as client:
        assert client.get(path, timeout=60).status_code == 404  # allowed; no such stream
        asked = len(cluster.reviews("SubjectAccessReview"))
        _set(cluster, tokenreview="500", sar="500")
        r = client.get(path, timeout=60)
    _set(cluster)
    assert r.status_code == 404, r.text  # both answers are cached for their TTLs
    assert len(cluster.reviews("SubjectAccessReview")) == asked


def test_reviews_carry_kubernetes_shapes_and_the_registrys_own_token(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, sar="allow")
    with registry.client(GOOD_TOKEN) as client:
        assert client.get("/v2/shapes/demo/tags/list", timeout=60).status_code == 404
    review = cluster.reviews("TokenReview")[-1]
    assert review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["spec"]["audiences"] == ["registry.example"]
    sar = next(
        s
        for s in reversed(cluster.reviews("SubjectAccessReview"))
        if s["spec"].get("resourceAttributes", {}).get("namespace") == "shapes"
    )
    assert sar["apiVersion"] == "authorization.k8s.io/v1"
    assert sar["spec"]["user"] == SA_USER
    assert sar["spec"]["uid"] == "4f1d"
    assert "system:serviceaccounts:team-a" in sar["spec"]["groups"]
    assert "system:authenticated" in sar["spec"]["groups"]
    assert sar["spec"]["resourceAttributes"] == {
        "namespace": "shapes",
        "verb": "get",
        "group": "image.alauda.io",
        "resource": "imagestreams",
        "subresource": "layers",
        "name": "demo",
    }
    assert set(cluster.auth_headers) == {"Bearer registry-own-token"}


def test_a_token_for_other_audiences_or_rejected_is_401(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, tokenreview="wrong-aud")
    with registry.client("token-for-someone-else") as client:
        r = client.get("/v2/", timeout=60)
    assert r.status_code == 401, r.text
    _set(cluster)
    with registry.client("no-such-token") as client:
        r = client.get("/v2/", timeout=60)
        assert r.status_code == 401
        # The API answers with a Kubernetes Status
        r = client.get("/apis/image.alauda.io/v1/namespaces/team-a/imagestreams", timeout=60)
        assert r.status_code == 401
        assert r.json()["kind"] == "Status"


def test_api_requests_get_a_503_status_when_the_cluster_fails(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, sar="500")
    with registry.client("good-api") as client:
        r = client.get("/apis/image.alauda.io/v1/namespaces/api503/imagestreams", timeout=60)
    _set(cluster)
    assert r.status_code == 503, r.text
    assert r.json()["kind"] == "Status"
    assert r.json()["reason"] == "ServiceUnavailable"


def test_tokens_never_reach_the_log(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, tokenreview="500")
    assert _catalog(registry, "good-secret-in-log").status_code == 503
    _set(cluster)
    log = registry.log_text()
    assert "cannot decide" in log  # the failures above were logged...
    assert "good-secret-in-log" not in log  # ...without the tokens they were about
    assert "registry-own-token" not in log


def test_the_token_endpoint_hands_back_reviewed_tokens_and_503s_without_the_cluster(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, tokenreview="500")
    with registry.client() as client:
        r = client.get("/v2/token", auth=("ci", "good-token-endpoint"), timeout=60)
        assert r.status_code == 503, r.text
        r = client.post(
            "/v2/token",
            data={"grant_type": "password", "username": "ci", "password": "good-token-endpoint"},
            timeout=60,
        )
        assert r.status_code == 503, r.text
        _set(cluster)
        r = client.get("/v2/token", auth=("ci", "good-token-endpoint"), timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["token"] == "good-token-endpoint"  # no token of the registry's own
        r = client.get("/v2/token", auth=("ci", "wrong"), timeout=60)
        assert r.status_code == 401, r.text
        anonymous = client.get("/v2/token", timeout=60).json()["token"]
    # The anonymous token is the registry's own and stands for system:anonymous only,
    # whom the cluster decides about like anyone else (here: denied).
    _set(cluster, sar="deny")
    with registry.client(anonymous) as client:
        r = client.get("/v2/anon/demo/tags/list", timeout=60)
    _set(cluster)
    assert r.status_code == 401, r.text
    assert "Bearer realm=" in r.headers["WWW-Authenticate"]
    assert cluster.reviews("SubjectAccessReview")[-1]["spec"]["user"] == "system:anonymous"


def _sample(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_reviews_the_cluster_could_not_answer_are_counted_as_errors(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    cluster, _ = fake
    _set(cluster, tokenreview="500")
    assert _catalog(registry, "good-metrics-authn").status_code == 503
    _set(cluster, sar="500")
    with registry.client("good-metrics-authz") as client:
        assert client.get("/v2/metrics/demo/tags/list", timeout=60).status_code == 503
    _set(cluster)
    with registry.client("good-metrics-scraper") as client:
        r = client.get("/metrics", timeout=60)
    assert r.status_code == 200, r.text
    authn = "imageregistry_authentication_attempts_total"
    authz = "imageregistry_authorization_decisions_total"
    assert _sample(r.text, authn, 'result="error"') >= 1
    assert _sample(r.text, authn, 'result="success"') >= 1
    assert _sample(r.text, authz, 'decision="error"') >= 1
    assert _sample(r.text, authz, 'decision="allowed"') >= 1


def test_concurrent_requests_share_one_review(
    registry: RegistryProcess, fake: tuple[FakeCluster, str]
) -> None:
    """Eight requests at once with a token the registry has not seen (a client pulling
    layers in parallel) cost the cluster one TokenReview and one SubjectAccessReview."""
    cluster, _ = fake
    _set(cluster, tokenreview="delayed", sar="delayed")
    token, path = "good-burst", "/v2/burst/demo/tags/list"
    with registry.client(token) as client, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.get(path, timeout=60).status_code, range(8)))
    _set(cluster)
    assert codes == [404] * 8  # allowed; no such stream
    assert [r["spec"]["token"] for r in cluster.reviews("TokenReview")].count(token) == 1
    asked = [
        r
        for r in cluster.reviews("SubjectAccessReview")
        if r["spec"].get("resourceAttributes", {}).get("namespace") == "burst"
    ]
    assert len(asked) == 1
