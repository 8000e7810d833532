"""The audit log against a real 2-worker server, real kubectl and real skopeo.

The policy puts nodes at `None`, RoleBindings at `RequestResponse`, the image API group at
`Metadata`, the core and authentication groups at `Request` (so the token subresource and
TokenReview bodies would be kept if the log did not refuse to), and everything else at
`Metadata`. Every line must be an `audit.k8s.io/v1` Event with the fields the Kubernetes
API reference marks required; no token and no password may appear anywhere in the file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from tests.e2e.ac_images import layer, push, write_layout
from tests.e2e.kubectl_support import Kubectl, add_user_token
from tests.support.server import BIN, RegistryProcess, refused_serve

PASSWORD = "aud1t-Pa55-wörd"
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    userGroups: ["system:nodes"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
  - level: RequestResponse
    resources:
      - group: rbac.authorization.k8s.io
        resources: [rolebindings]
  - level: Metadata
    resources:
      - group: image.alauda.io
  - level: Request
    resources:
      - group: ""
      - group: authentication.k8s.io
  - level: Metadata
"""
# audit.k8s.io/v1 Event (kubernetes.io/docs/reference/config-api/apiserver-audit.v1/)
REQUIRED = ("level", "auditID", "stage", "requestURI", "verb", "user")
FIELDS = {
    "kind",
    "apiVersion",
    *REQUIRED,
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
}
OBJECT_REF_FIELDS = {
    "resource",
    "namespace",
    "name",
    "uid",
    "apiGroup",
    "apiVersion",
    "resourceVersion",
    "subresource",
}
USER_FIELDS = {"username", "uid", "groups", "extra"}
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# Shapes of every token this server issues: opaque, refresh, and JWTs (ES256).
TOKEN_SHAPES = re.compile(r"irr?_[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def check_event(event: dict[str, Any]) -> None:
    """One line against the audit.k8s.io/v1 Event reference."""
    assert event["kind"] == "Event" and event["apiVersion"] == "audit.k8s.io/v1", event
    for name in REQUIRED:
        assert event.get(name), (name, event)
    assert set(event) <= FIELDS, set(event) - FIELDS
    assert event["level"] in ("Metadata", "Request", "RequestResponse"), event
    assert event["stage"] in ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
    assert set(event["user"]) <= USER_FIELDS and isinstance(event["user"]["username"], str)
    assert all(isinstance(g, str) for g in event["user"].get("groups", []))
    assert MICRO_TIME.fullmatch(event["requestReceivedTimestamp"]), event
    assert MICRO_TIME.fullmatch(event["stageTimestamp"]), event
    assert event["stageTimestamp"] >= event["requestReceivedTimestamp"]
    assert all(isinstance(ip, str) for ip in event.get("sourceIPs", []))
    if "objectRef" in event:
        assert set(event["objectRef"]) <= OBJECT_REF_FIELDS, event["objectRef"]
        assert event["objectRef"]["resource"]
    if event["stage"] != "RequestReceived":
        status = event["responseStatus"]
        assert isinstance(status["code"], int)
        if status["code"] >= 400:
            assert status["status"] == "Failure"
    else:
        assert "responseStatus" not in event
    if event["level"] == "Metadata":
        assert "requestObject" not in event and "responseObject" not in event
    if event["level"] == "Request":
        assert "responseObject" not in event
    for value in event.get("annotations", {}).values():
        assert isinstance(value, str)


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_bytes().splitlines():
        event = json.loads(line)
        check_event(event)
        events.append(event)
    return events


def wait_for(
    path: Path, match: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The events `match` accepts, once there are `count` of them (an event is written
    right after its response, so a client may see the answer first)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in read_events(path) if match(e)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Audited:
    def __init__(self, server: RegistryProcess, log: Path, root: Path) -> None:
        self.server = server
        self.log = log
        self.root = root
        self.kubectl = Kubectl(server, root / "kube-cache")
        self.minted: set[str] = {server.admin_token}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    root = tmp_path_factory.mktemp("audit")
    (root / "policy.yaml").write_text(POLICY)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    log = root / "logs" / "audit.log"
    with RegistryProcess(
        data_dir=root / "data",
        extra_args=[
            "--workers",
            "2",
            "--htpasswd-file",
            str(root / "htpasswd"),
            "--audit-log-path",
            str(log),
            "--audit-policy-file",
            str(root / "policy.yaml"),
        ],
    ) as server:
        yield Audited(server, log, root)


def test_levels_follow_the_policy(audited: Audited) -> None:
    server, kubectl = audited.server, audited.kubectl
    kubectl.ok("create", "namespace", "audit-a")
    kubectl.ok(
        "create",
        "rolebinding",
        "nodes-pull",
        "--clusterrole=system:image-puller",
        "--group=system:nodes",
        "-n",
        "audit-a",
    )
    layout, _manifest, _ = write_layout(audited.root / "layout", [layer("audit", 2048)])
    push(layout, f"{server.host}/audit-a/app:v1", server.admin_token, server.cert_dir(audited.root))
    node = add_user_token(server, "system:node:n1", ("system:nodes",))
    audited.minted.add(node)
    inspected = subprocess.run(
        [
            "skopeo",
            "inspect",
            f"--registry-token={node}",
            f"--cert-dir={server.cert_dir(audited.root)}",
            f"docker://{server.host}/audit-a/app:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr
    kubectl.ok("get", "imagestreams", "-n", "audit-a")

    def rolebinding_create(e: dict[str, Any]) -> bool:
        ref = e.get("objectRef", {})
        return bool(ref.get("resource") == "rolebindings" and e["stage"] == "ResponseComplete")

    (binding,) = wait_for(audited.log, rolebinding_create)
    assert binding["level"] == "RequestResponse"
    assert binding["verb"] == "create"
    assert binding["objectRef"]["name"] == "nodes-pull"  # from the body: the path has none
    assert binding["objectRef"]["namespace"] == "audit-a"
    assert binding["requestObject"]["roleRef"]["name"] == "system:image-puller"
    assert binding["responseObject"]["kind"] == "RoleBinding"
    assert binding["annotations"]["authorization.k8s.io/decision"] == "allow"

    def manifest_push(e: dict[str, Any]) -> bool:
        return bool(e["requestURI"] == "/v2/audit-a/app/manifests/v1" and e["verb"] == "update")

    pushed = wait_for(audited.log, manifest_push, count=2)
    assert {e["stage"] for e in pushed} == {"RequestReceived", "ResponseComplete"}
    for event in pushed:
        assert event["level"] == "Metadata"
        assert event["auditID"] == pushed[0]["auditID"]
        assert event["user"]["username"] == "system:admin"
        assert event["objectRef"] == {
            "resource": "imagestreams",
            "subresource": "layers",
            "namespace": "audit-a",
            "name": "app",
            "apiGroup": "image.alauda.io",
            "apiVersion": "v1",
        }
    (done,) = [e for e in pushed if e["stage"] == "ResponseComplete"]
    assert done["responseStatus"]["code"] == 201
    assert done["userAgent"].startswith("skopeo")
    assert done["sourceIPs"] == ["127.0.0.1"]
    uploads = wait_for(audited.log, lambda e: "/blobs/uploads/" in e["requestURI"])
    assert uploads and all(e["level"] == "Metadata" for e in uploads)

    listed = wait_for(
        audited.log,
        lambda e: e.get("objectRef", {}).get("resource") == "imagestreams" and e["verb"] == "list",
    )
    assert listed and all(e["level"] == "Metadata" for e in listed)
    namespace = wait_for(
        audited.log,
        lambda e: (
            e.get("objectRef") == {"resource": "namespaces", "name": "audit-a", "apiVersion": "v1"}
            and e["stage"] == "ResponseComplete"
        ),
    )
    assert namespace[0]["level"] == "Request"
    assert namespace[0]["requestObject"]["metadata"]["name"] == "audit-a"  # kubectl's protobuf
    # The node pulled (skopeo succeeded), and not one line names it.
    assert not [e for e in read_events(audited.log) if e["user"]["username"] == "system:node:n1"]
    assert not [e for e in read_events(audited.log) if "/healthz" in e["requestURI"]]


def test_the_audit_id_is_the_request_id(audited: Audited) -> None:
    server = audited.server
    with server.client(server.admin_token) as client:
        reply = client.get("/api/v1/namespaces/audit-a", headers={"X-Request-Id": "audit-id-1"})
        assert reply.status_code in (200, 404)
    (event,) = wait_for(
        audited.log, lambda e: e["auditID"] == "audit-id-1" and "responseStatus" in e
    )
    assert event["requestURI"] == "/api/v1/namespaces/audit-a"
    assert event["verb"] == "get"


def test_impersonation_names_both_users(audited: Audited) -> None:
    server = audited.server
    with server.client(server.admin_token) as client:
        reply = client.get(
            "/apis/image.alauda.io/v1/namespaces/audit-x/imagestreams",
            headers={"Impersonate-User": "mallory", "X-Request-Id": "as-mallory"},
        )
        assert reply.status_code == 403  # mallory may not list them
    (event,) = wait_for(
        audited.log, lambda e: e["auditID"] == "as-mallory" and e["stage"] == "ResponseComplete"
    )
    assert event["user"]["username"] == "system:admin"
    assert event["impersonatedUser"] == {"username": "mallory", "groups": ["system:authenticated"]}
    assert event["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert event["responseStatus"]["code"] == 403
    assert event["responseStatus"]["reason"] == "Forbidden"
    assert "mallory" in event["responseStatus"]["message"]


def test_a_refused_credential_gets_a_line(audited: Audited) -> None:
    server = audited.server
    with server.client() as client:
        wrong = client.get(
            "/v2/audit-a/app/manifests/v1",
            headers={"Authorization": basic("alice", "not-" + PASSWORD), "X-Request-Id": "bad-pw"},
        )
        assert wrong.status_code == 401
        bogus = client.get(
            "/api/v1/namespaces",
            headers={
                "Authorization": "Bearer ir_not-a-real-token-at-all",
                "X-Request-Id": "bad-tk",
            },
        )
        assert bogus.status_code == 401
    (by_password,) = wait_for(
        audited.log, lambda e: e["auditID"] == "bad-pw" and e["stage"] == "ResponseComplete"
    )
    assert by_password["user"] == {"username": "alice", "groups": ["system:unauthenticated"]}
    assert by_password["responseStatus"]["code"] == 401
    assert by_password["objectRef"]["resource"] == "imagestreams"
    assert by_password["annotations"] == {"imageregistry.alauda.io/authentication": "failed"}
    (by_token,) = wait_for(audited.log, lambda e: e["auditID"] == "bad-tk")
    assert by_token["user"]["username"] == "system:anonymous"
    assert by_token["responseStatus"] == {
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    text = audited.log.read_text()
    assert PASSWORD not in text and "not-a-real-token" not in text


def test_no_token_or_password_reaches_the_log(audited: Audited) -> None:
    server, kubectl = audited.server, audited.kubectl
    kubectl.ok("create", "namespace", "audit-b")
    kubectl.ok("create", "serviceaccount", "builder", "-n", "audit-b")
    sa_token = kubectl.ok("create", "token", "builder", "-n", "audit-b").strip()
    audited.minted.add(sa_token)
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": sa_token},
    }
    reviewed = kubectl.ok("create", "-f", "-", "-o", "json", stdin=json.dumps(review))
    assert json.loads(reviewed)["status"]["authenticated"] is True
    with server.client() as client:
        got = client.get(
            "/v2/token",
            params={"service": "imageregistry", "offline_token": "true"},
            headers={"Authorization": basic("alice", PASSWORD)},
        )
        assert got.status_code == 200, got.text
        audited.minted |= {got.json()["token"], got.json()["refresh_token"]}
        posted = client.post(
            "/v2/token",
            data={
                "grant_type": "password",
                "username": "alice",
                "password": PASSWORD,
                "service": "imageregistry",
                "access_type": "offline",
                "client_id": "audit-test",
            },
        )
        assert posted.status_code == 200, posted.text
        audited.minted |= {posted.json()["access_token"], posted.json()["refresh_token"]}
        refreshed = client.post(
            "/v2/token",
            data={"grant_type": "refresh_token", "refresh_token": posted.json()["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text
        audited.minted.add(refreshed.json()["access_token"])
    # skopeo logs in with the service account's token as a password: /v2/token, then Bearer
    layout, _manifest, _ = write_layout(audited.root / "layout-sa", [layer("sa", 1024)])
    kubectl.ok(
        "create",
        "rolebinding",
        "builder-push",
        "--clusterrole=system:image-pusher",
        "--serviceaccount=audit-b:builder",
        "-n",
        "audit-b",
    )
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            f"--dest-creds=builder:{sa_token}",
            f"--dest-cert-dir={server.cert_dir(audited.root)}",
            f"oci:{layout}:img",
            f"docker://{server.host}/audit-b/by-sa:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    events = wait_for(audited.log, lambda e: e["requestURI"] == "/v2/audit-b/by-sa/manifests/v1", 2)
    assert events[0]["user"]["username"] == "system:serviceaccount:audit-b:builder"
    token_request = wait_for(
        audited.log,
        lambda e: (
            e.get("objectRef", {}).get("subresource") == "token"
            and e["stage"] == "ResponseComplete"
        ),
    )
    assert token_request[0]["level"] == "Request"  # the policy asks for the body ...
    assert "requestObject" not in token_request[0]  # ... and a token request's is never kept
    reviews = wait_for(
        audited.log, lambda e: e.get("objectRef", {}).get("resource") == "tokenreviews"
    )
    assert reviews and all("requestObject" not in e for e in reviews)
    wait_for(audited.log, lambda e: e["requestURI"].startswith("/v2/token"), count=4)

    text = audited.log.read_text()
    assert len(audited.minted) >= 7
    for token in audited.minted:
        assert token not in text
    assert not TOKEN_SHAPES.findall(text)
    assert PASSWORD not in text
    assert 'authorization"' not in text.lower() and "bearer " not in text.lower()


def test_a_bad_policy_stops_serve_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Verbose\n")
    for args, env in (
        (["--audit-log-path", str(tmp_path / "audit.log"), "--audit-policy-file", str(policy)], {}),
        (
            [],
            {
                "IMAGE_REGISTRY_AUDIT_LOG_PATH": "-",
                "IMAGE_REGISTRY_AUDIT_POLICY_FILE": str(policy),
            },
        ),
    ):
        result = refused_serve(tmp_path / "data", *args, env={"PATH": "/usr/bin:/bin", **env})
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"Error: audit policy file {policy}: rules[0].level: expected one of None,"
            " Metadata, Request, RequestResponse, got 'Verbose'"
        ]
    assert not (tmp_path / "data" / "registry.db").exists()  # refused before preparing


def test_rotation_across_workers_keeps_the_backups_asked_for(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n"
    )
    log = tmp_path / "audit.log"
    agent = "rotation-test/" + "x" * 700  # ~1 KiB per line: 1 MiB every ~1000 requests
    with RegistryProcess(
        data_dir=tmp_path / "data",
        plain_http=True,
        extra_args=[
            "--workers",
            "2",
            "--audit-log-path",
            str(log),
            "--audit-policy-file",
            str(tmp_path / "policy.yaml"),
            "--audit-log-maxsize",
            "1",
            "--audit-log-maxbackup",
            "2",
        ],
    ) as server:
        sent = 0
        with httpx.Client(base_url=server.url, headers={"User-Agent": agent}) as client:
            while not (tmp_path / "audit.log.2").exists() or sent < 4500:
                assert client.get("/v2/", headers={"X-Request-Id": f"r-{sent}"}).status_code == 401
                sent += 1
                assert sent < 20000
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit.log"))
    assert names == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.lock"]
    ids: list[int] = []
    for name in names[:3]:
        assert (tmp_path / name).stat().st_size < 1024 * 1024 + 2 * 64 * 1024 + 4096
        ids += [int(e["auditID"][2:]) for e in read_events(tmp_path / name)]
    assert len(ids) == len(set(ids))
    assert sent - 1 in ids and 0 not in ids  # the newest kept, the oldest rotated away


SUITES = ("tests/e2e/test_kubectl.py", "tests/e2e/test_skopeo.py", "tests/e2e/test_token_oauth.py")


def test_the_kubectl_and_skopeo_suites_leave_no_token_in_the_log(tmp_path: Path) -> None:
    """Every server of these suites writes to one audit log at `RequestResponse` for every
    request (the most a policy can ask); afterwards no token any of them issued, no token
    of any shape ours have, and no password of the suites is in it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: RequestResponse\n"
    )
    log = tmp_path / "audit.log"
    basetemp = tmp_path / "suites"
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            f"--basetemp={basetemp}",
            *SUITES,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1200,
        env={
            **os.environ,
            "IMAGE_REGISTRY_AUDIT_LOG_PATH": str(log),
            "IMAGE_REGISTRY_AUDIT_POLICY_FILE": str(policy),
            "IMAGE_REGISTRY_AUDIT_LOG_MAXSIZE": "0",
        },
    )
    assert run.returncode == 0, run.stdout[-3000:]
    events = read_events(log)
    assert len(events) > 500
    text = log.read_text()
    minted = {
        str(yaml.safe_load(path.read_text())["users"][0]["user"]["token"])
        for path in basetemp.rglob("admin.kubeconfig")
    }
    assert len(minted) >= 3  # one per server of the suites
    for token in minted:
        assert token not in text
    assert not TOKEN_SHAPES.findall(text)
    from tests.e2e import test_token_oauth

    assert test_token_oauth.PASSWORD not in text
    assert "bearer " not in text.lower() and 'authorization"' not in text.lower()
    # the suites' token traffic is there, without its bodies
    token_calls = [e for e in events if e["requestURI"].startswith("/v2/token")]
    assert token_calls and all(
        "requestObject" not in e and "responseObject" not in e for e in token_calls
    )
    token_requests = [e for e in events if e.get("objectRef", {}).get("subresource") == "token"]
    assert all("responseObject" not in e for e in token_requests)
