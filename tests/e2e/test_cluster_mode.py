"""Cluster mode end to end: the cluster's service accounts and RoleBindings decide.

A real kube-apiserver cannot run on this machine, so a second instance of our own server,
in its standalone mode, plays the cluster: the real `kubectl` creates namespaces, service
accounts, tokens and RoleBindings there, and it answers the registry's `TokenReview` and
`SubjectAccessReview` posts. The shapes it answers with were checked against the
Kubernetes API reference (authentication.k8s.io/v1 TokenReview: spec.token,
spec.audiences; status.authenticated, status.user {username, uid, groups, extra},
status.audiences, status.error. authorization.k8s.io/v1 SubjectAccessReview:
spec.resourceAttributes {namespace, verb, group, version, resource, subresource, name} or
spec.nonResourceAttributes {path, verb}, spec.user/groups/uid/extra; status.allowed
(required), status.denied, status.reason, status.evaluationError);
`test_the_cluster_answers_reviews_in_kubernetes_shapes` holds it to them.

The registry runs with `--auth-mode kubernetes --cluster-kubeconfig FILE`, where FILE names
the cluster's CA and a `tokenFile` with the token of the cluster's service account
`image-registry/image-registry`, bound to `system:auth-delegator` as
deploy/kubernetes/components/cluster-mode binds it. Cache lifetimes are 2 s here, so a
change of binding shows within a few seconds (the test polls, without timing anything).
"""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.ac_images import layer, write_layout
from tests.e2e.kubectl_support import Kubectl
from tests.support.certs import Authority
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess

PROXY_NAME = "front-proxy-client"
TTL = 2  # seconds, every cache of the registry under test
PATIENCE = 60.0  # seconds a changed binding may take to show (many TTLs on a loaded machine)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """The standalone server that plays the Kubernetes cluster."""
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("cluster") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(cluster: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(cluster, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def registry(
    cluster: RegistryProcess, k: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("registry")
    k.ok("create", "namespace", "image-registry")
    k.ok("create", "serviceaccount", "image-registry", "-n", "image-registry")
    k.ok(
        "create",
        "clusterrolebinding",
        "image-registry:auth-delegator",
        "--clusterrole=system:auth-delegator",
        "--serviceaccount=image-registry:image-registry",
    )
    token = k.ok("create", "token", "image-registry", "-n", "image-registry").strip()
    token_file = root / "token"
    token_file.write_text(token)
    kubeconfig = root / "cluster.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "cluster",
                        "cluster": {
                            "server": cluster.url,
                            "certificate-authority": str(cluster.ca_file),
                        },
                    }
                ],
                "users": [{"name": "registry", "user": {"tokenFile": str(token_file)}}],
                "contexts": [
                    {"name": "registry", "context": {"cluster": "cluster", "user": "registry"}}
                ],
                "current-context": "registry",
            }
        )
    )
    env = {
        f"IMAGE_REGISTRY_{name}": str(TTL)
        for name in (
            "CLUSTER_AUTHN_CACHE_TTL_SECONDS",
            "CLUSTER_AUTHN_FAILURE_CACHE_TTL_SECONDS",
            "CLUSTER_AUTHZ_ALLOWED_TTL_SECONDS",
            "CLUSTER_AUTHZ_DENIED_TTL_SECONDS",
        )
    }
    args = ["--auth-mode", "kubernetes", "--cluster-kubeconfig", str(kubeconfig)]
    # The aggregator's front-proxy port too: its users are authorized by the cluster as well.
    request_header_ca = Authority.create(root, "front-proxy-ca")
    args += [
        "--front-proxy-listen",
        f"127.0.0.1:{free_port()}",
        "--requestheader-client-ca-file",
        str(request_header_ca.path),
        "--requestheader-allowed-names",
        PROXY_NAME,
    ]
    request_header_ca.client(root, PROXY_NAME)
    with RegistryProcess(data_dir=root / "data", extra_args=args, env=env) as proc:
        yield proc


def _front_proxy(registry: RegistryProcess) -> httpx.Client:
    """A client on the front-proxy port with the aggregator's certificate."""
    args = registry.extra_args
    port = args[args.index("--front-proxy-listen") + 1].rpartition(":")[2]
    root = registry.data_dir.parent
    context = ssl.create_default_context(cafile=registry.ca_file)
    context.load_cert_chain(
        str(root / f"{PROXY_NAME}-by-front-proxy-ca.crt"),
        str(root / f"{PROXY_NAME}-by-front-proxy-ca.key"),
    )
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=60)


def _service_account(k: Kubectl, namespace: str, name: str) -> str:
    """A service account of the cluster and a token `kubectl create token` gives it."""
    k.ok("create", "serviceaccount", name, "-n", namespace)
    return k.ok("create", "token", name, "-n", namespace).strip()


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def _push(registry: RegistryProcess, work: Path, repo: str, token: str, seed: str) -> bool:
    layout, _manifest, _ = write_layout(work / f"layout-{seed}", [layer(seed, 4096)])
    result = _skopeo(
        "copy",
        "--quiet",
        f"--dest-creds=sa:{token}",  # Basic with the token as password, as the docs show
        f"--dest-cert-dir={registry.cert_dir(work)}",
        f"oci:{layout}:img",
        f"docker://{registry.host}/{repo}",
    )
    return result.returncode == 0


def _pull(registry: RegistryProcess, work: Path, ref: str, token: str) -> bool:
    result = _skopeo(
        "inspect",
        "--raw",
        f"--creds=sa:{token}",
        f"--cert-dir={registry.cert_dir(work)}",
        f"docker://{registry.host}/{ref}",
    )
    return result.returncode == 0


def _eventually(check: Callable[[], bool], expected: bool) -> None:
    deadline = time.monotonic() + PATIENCE
    while check() != expected:
        assert time.monotonic() < deadline, f"still {not expected} after {PATIENCE} s"
        time.sleep(0.5)


def test_the_cluster_answers_reviews_in_kubernetes_shapes(
    cluster: RegistryProcess, k: Kubectl, registry: RegistryProcess
) -> None:
    """The standalone server, as the cluster, serves TokenReview and (non-self)
    SubjectAccessReview with Kubernetes' JSON shapes, and only to those allowed to create
    them (the registry's own account is, through system:auth-delegator)."""
    k.ok("create", "namespace", "shapes")
    user_token = _service_account(k, "shapes", "someone")
    own = (registry.data_dir.parent / "token").read_text()
    with cluster.client(own) as client:
        r = client.post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": user_token},
            },
        )
        assert r.status_code == 201, r.text
        review = r.json()
        assert review["kind"] == "TokenReview"
        assert review["apiVersion"] == "authentication.k8s.io/v1"
        assert "token" not in review["spec"]
        status = review["status"]
        assert status["authenticated"] is True
        assert status["user"]["username"] == "system:serviceaccount:shapes:someone"
        assert status["user"]["uid"]
        assert {"system:serviceaccounts", "system:serviceaccounts:shapes"} <= set(
            status["user"]["groups"]
        )
        assert isinstance(status["audiences"], list) and status["audiences"]
        r = client.post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={"kind": "TokenReview", "spec": {"token": user_token[:-4] + "AAAA"}},
        )
        assert r.status_code == 201
        assert r.json()["status"].get("authenticated") in (False, None)
        assert r.json()["status"]["error"]
        sar: dict[str, Any] = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:serviceaccount:shapes:someone",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {
                    "namespace": "shapes",
                    "verb": "get",
                    "group": "image.alauda.io",
                    "resource": "imagestreams",
                    "subresource": "layers",
                    "name": "demo",
                },
            },
        }
        r = client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=sar)
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "SubjectAccessReview"
        assert r.json()["status"]["allowed"] is False
        both = {**sar["spec"], "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}
        r = client.post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json={**sar, "spec": both},
        )
        assert r.status_code == 422, r.text  # one or the other, as kube validates
    # Someone without `create subjectaccessreviews` may not ask about others.
    with cluster.client(user_token) as client:
        r = client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=sar)
        assert r.status_code == 403, r.text
        assert r.json()["kind"] == "Status"
        r = client.post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={"kind": "TokenReview", "spec": {"token": own}},
        )
        assert r.status_code == 403, r.text


def test_pulls_follow_the_clusters_rolebindings(
    k: Kubectl, registry: RegistryProcess, work: Path
) -> None:
    for ns in ("team-a", "team-b", "app"):
        k.ok("create", "namespace", ns)
    pusher = _service_account(k, "app", "builder")
    k.ok(
        "create",
        "rolebinding",
        "builder-pushes",
        "--clusterrole=system:image-pusher",
        "--serviceaccount=app:builder",
        "-n",
        "team-a",
    )
    # A pusher binding allows pushes in that namespace only.
    assert _push(registry, work, "team-a/demo:latest", pusher, "a")
    assert not _push(registry, work, "team-b/demo:latest", pusher, "b")

    puller = _service_account(k, "app", "deployer")
    assert not _pull(registry, work, "team-a/demo:latest", puller)
    k.ok(
        "create",
        "rolebinding",
        "deployer-pulls",
        "--clusterrole=system:image-puller",
        "--serviceaccount=app:deployer",
        "-n",
        "team-a",
    )
    _eventually(lambda: _pull(registry, work, "team-a/demo:latest", puller), True)
    assert not _push(registry, work, "team-a/other:latest", puller, "c")  # a puller only
    k.ok("delete", "rolebinding", "deployer-pulls", "-n", "team-a")
    _eventually(lambda: _pull(registry, work, "team-a/demo:latest", puller), False)


def test_image_api_in_cluster_mode(k: Kubectl, registry: RegistryProcess, work: Path) -> None:
    """The registry's own API decides by the cluster too, and leaves namespaces, service
    accounts and RBAC to it."""
    k.ok("create", "namespace", "api-team")
    token = _service_account(k, "api-team", "viewer")
    with registry.client(token) as client:
        stream = "/apis/image.alauda.io/v1/namespaces/api-team/imagestreams/demo"
        assert client.get(stream).status_code == 403
        k.ok(
            "create",
            "rolebinding",
            "viewer-view",
            "--clusterrole=system:image-pusher",
            "--serviceaccount=api-team:viewer",
            "-n",
            "api-team",
        )
        _eventually(lambda: client.get(stream).status_code == 404, True)  # allowed, none yet
        r = client.post(
            "/apis/image.alauda.io/v1/namespaces/api-team/imagestreams",
            json={"metadata": {"name": "demo"}},
        )
        assert r.status_code == 201, r.text  # the namespace is the cluster's: no local one
        assert client.get(stream).json()["metadata"]["namespace"] == "api-team"
        for local_only in (
            "/api/v1/namespaces",
            "/api/v1/namespaces/api-team/serviceaccounts",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        ):
            assert client.get(local_only).status_code in (403, 404), local_only
        who = client.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    # whoami needs `create selfsubjectreviews`, which the stand-in cluster's
    # system:basic-user grants to every authenticated user, as Kubernetes does.
    assert who.status_code == 201, who.text
    assert who.json()["status"]["userInfo"]["username"] == "system:serviceaccount:api-team:viewer"


def test_tokens_the_cluster_does_not_know_are_refused(
    registry: RegistryProcess, work: Path
) -> None:
    assert not _pull(registry, work, "team-a/demo:latest", "not-a-token-of-the-cluster")
    with registry.client("not-a-token-of-the-cluster") as client:
        r = client.get("/v2/")
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    with registry.client() as client:  # anonymous: a challenge
        r = client.get("/v2/team-a/demo/tags/list")
    assert r.status_code == 401
    assert "Bearer realm=" in r.headers["WWW-Authenticate"]


def test_front_proxy_users_are_authorized_by_the_cluster(
    k: Kubectl, registry: RegistryProcess
) -> None:
    """A user the aggregator names (X-Remote-User with its client certificate) is decided
    by a SubjectAccessReview too, so the cluster's RoleBindings grant them."""
    k.ok("create", "namespace", "fp-team")
    stream = "/apis/image.alauda.io/v1/namespaces/fp-team/imagestreams/demo"
    as_user = [
        ("X-Remote-User", "system:serviceaccount:fp-team:reader"),
        ("X-Remote-Group", "system:serviceaccounts"),
        ("X-Remote-Group", "system:serviceaccounts:fp-team"),
    ]
    with _front_proxy(registry) as client:
        r = client.get(stream, headers=as_user)
        assert r.status_code == 403, r.text
        assert "system:serviceaccount:fp-team:reader" in r.json()["message"]
        k.ok(
            "create",
            "rolebinding",
            "reader-pulls",
            "--clusterrole=system:image-puller",
            "--serviceaccount=fp-team:reader",
            "-n",
            "fp-team",
        )
        _eventually(lambda: client.get(stream, headers=as_user).status_code == 404, True)
