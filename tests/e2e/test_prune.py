"""The seed page's cleanup flow end to end: skopeo pushes, `ac adm prune images`, undo, GC.

Ages are simulated by back-dating the tag history and image rows in the server's SQLite
database (never by sleeping). In-use protection is exercised through
`--keep-referenced-from` and through `--cluster-kubeconfig` pointed at a small local
stand-in for a Kubernetes API server that serves a recorded pod list (and empty
workload lists) — a real cluster is not available to the tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.ac_images import Blob, layer, push, write_layout
from tests.e2e.ac_support import ac, login_admin
from tests.support.server import RegistryProcess


def backdate(server: RegistryProcess, days: int = 10) -> None:
    """Make every tag history item and image `days` old (simulated ages)."""
    when = datetime.now(UTC) - timedelta(days=days)
    engine = create_engine(f"sqlite:///{server.data_dir / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE tag_events SET created = :t"), {"t": when})
        conn.execute(text("UPDATE manifests SET created = :t, pushed = :t"), {"t": when})
    engine.dispose()


def stored_bytes(server: RegistryProcess) -> int:
    root = server.data_dir / "blobs" / "blobs"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class _PodList(BaseHTTPRequestHandler):
    """Stand-in Kubernetes API: a recorded pod list, every workload list empty."""

    pods: list[dict[str, object]] = []

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        kind = path.rstrip("/").rsplit("/", 1)[-1]
        items = self.pods if path == "/api/v1/pods" else []
        body = json.dumps(
            {"apiVersion": "v1", "kind": f"{kind.title()}List", "metadata": {}, "items": items}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, type[_PodList]]]:
    handler = type("Pods", (_PodList,), {"pods": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "cluster.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{httpd.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    try:
        yield kubeconfig, handler
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = Path(tmp_path_factory.mktemp("prune"))
    htpasswd = root / "htpasswd"
    import bcrypt

    htpasswd.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    with RegistryProcess(
        data_dir=root / "data",
        extra_args=["--htpasswd-file", str(htpasswd)],
        env={"IMAGE_REGISTRY_GC_GRACE_SECONDS": "0"},
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def home(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return login_admin(server, Path(tmp_path_factory.mktemp("home")))


class Pushed:
    def __init__(self) -> None:
        self.layouts: dict[str, Path] = {}
        self.blobs: dict[str, list[Blob]] = {}  # manifest digest -> layers + config


def push_revisions(
    server: RegistryProcess, root: Path, repo: str, count: int, pushed: Pushed
) -> list[str]:
    certs = server.cert_dir(root)
    base = layer(f"{repo}-base", 40_000)
    digests = []
    for i in range(count):
        unique = layer(f"{repo}-rev-{i}", 20_000 + i)
        path, manifest, config = write_layout(
            root / f"{repo.replace('/', '_')}-{i}", [base, unique]
        )
        push(path, f"{server.host}/{repo}:latest", server.admin_token, certs)
        pushed.layouts[manifest.digest] = path
        pushed.blobs[manifest.digest] = [base, unique, config]
        digests.append(manifest.digest)
    return digests  # oldest first


def history(server: RegistryProcess, ns: str, name: str) -> dict[str, list[str]]:
    with server.client(server.admin_token) as client:
        body = client.get(f"/apis/image.alauda.io/v1/namespaces/{ns}/imagestreams/{name}").json()
    return {t["tag"]: [i["image"] for i in t["items"]] for t in body["status"].get("tags") or []}


def image_names(server: RegistryProcess) -> set[str]:
    with server.client(server.admin_token) as client:
        body = client.get("/apis/image.alauda.io/v1/images").json()
    return {i["metadata"]["name"] for i in body["items"]}


def run_id(stderr: str) -> str:
    match = re.search(r"Recorded prune run (\S+);", stderr)
    assert match, stderr
    return match.group(1)


def test_seed_cleanup_flow(
    server: RegistryProcess, home: Path, tmp_path: Path, cluster: tuple[Path, type[_PodList]]
) -> None:
    pushed = Pushed()
    demo = push_revisions(server, tmp_path, "team-a/demo", 8, pushed)
    certs = server.cert_dir(tmp_path)
    push(pushed.layouts[demo[2]], f"{server.host}/team-a/demo:stable", server.admin_token, certs)
    backdate(server)
    assert len(history(server, "team-a", "demo")["latest"]) == 8

    # Preview: lists candidates, deletes nothing.
    dry = ac(home, "adm", "prune", "images")
    assert "Dry run enabled" in dry.stderr
    assert "Deleting 5 items from image stream team-a/demo" in dry.stdout
    assert len(history(server, "team-a", "demo")["latest"]) == 8

    # The seed page's confirmed prune (keep 5 revisions; `stable` keeps demo[2]).
    flags = ["--keep-tag-revisions=5", "--keep-younger-than=72h"]
    done = ac(home, "adm", "prune", "images", *flags, "--confirm")
    assert "Deleting 3 items from image stream team-a/demo" in done.stdout
    assert f"Deleting image {demo[0]}" in done.stdout and f"Deleting image {demo[1]}" in done.stdout
    assert done.stdout.strip().endswith(
        "Summary: deleted 2 image object(s), deleted 3 image stream tag item(s), "
        "updated 1 image stream(s)"
    )
    first_run = run_id(done.stderr)
    assert history(server, "team-a", "demo")["latest"] == demo[3:][::-1]
    again = ac(home, "adm", "prune", "images", *flags)
    assert "Deleting" not in again.stdout and "Summary: deleted 0 objects" in again.stdout

    # Undo without --confirm is a dry run: it lists what it would restore, changes nothing.
    preview_undo = ac(home, "adm", "prune", "images", "--undo", first_run)
    assert (
        "Dry run enabled" in preview_undo.stderr and "--confirm to restore" in preview_undo.stderr
    )
    assert f"Would restore image {demo[0]}" in preview_undo.stdout
    assert f"Would restore tag item team-a/demo:latest -> {demo[1]}" in preview_undo.stdout
    assert (
        "would restore 2 image object(s), would restore 3 image stream tag item(s), "
        "would update 1 image stream(s)" in preview_undo.stdout
    )
    as_json = json.loads(
        ac(home, "adm", "prune", "images", "--undo", first_run, "-o", "json").stdout
    )
    assert as_json["status"]["dryRun"] is True
    assert sorted(as_json["status"]["images"]) == sorted([demo[0], demo[1]])
    assert len(as_json["status"]["tagItems"]) == 3
    assert history(server, "team-a", "demo")["latest"] == demo[3:][::-1]
    assert {demo[0], demo[1]}.isdisjoint(image_names(server))

    # Undo restores the tags and images; then prune again for real.
    undo = ac(home, "adm", "prune", "images", "--undo", first_run, "--confirm", "-o", "json")
    assert json.loads(undo.stdout)["status"]["dryRun"] is False
    assert "restored 2 image object(s), restored 3 image stream tag item(s)" in undo.stdout
    assert history(server, "team-a", "demo")["latest"] == demo[::-1]
    assert {demo[0], demo[1]} <= image_names(server)
    second_run = run_id(ac(home, "adm", "prune", "images", *flags, "--confirm").stderr)

    # Whitelist and in-use protection (a file and a stand-in cluster's pods).
    core = push_revisions(server, tmp_path, "cpaas-system/core", 6, pushed)
    backdate(server)
    kubeconfig, pods = cluster
    pods.pods = [
        {
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {
                "containers": [{"name": "web", "image": f"{server.host}/team-a/demo@{demo[4]}"}]
            },
        }
    ]
    refs = tmp_path / "refs.txt"
    refs.write_text(f"# in use\n{server.host}/team-a/demo:latest\n")
    preview_all = ac(
        home,
        "adm",
        "prune",
        "images",
        "--all",
        "--keep-referenced-from",
        str(refs),
        "--whitelist=^cpaas-system/.*",
    )
    assert f"Deleting image {demo[7]}" not in preview_all.stdout  # current `latest` is in use
    assert f"Deleting image {demo[6]}" in preview_all.stdout
    white = ac(
        home,
        "adm",
        "prune",
        "images",
        "--whitelist=^cpaas-system/.*",
        "--confirm",
        "--cluster-kubeconfig",
        str(kubeconfig),
    )
    assert "cpaas-system" not in white.stdout
    assert f"Deleting image {demo[3]}" in white.stdout and demo[4] not in white.stdout
    assert len(history(server, "cpaas-system", "core")["latest"]) == 6
    assert history(server, "team-a", "demo")["latest"] == [demo[7], demo[6], demo[5], demo[4]]

    # GC: preview, then reclaim exactly the blobs only pruned images used.
    remaining = image_names(server)
    kept_blobs = {b.digest for d in remaining if d in pushed.blobs for b in pushed.blobs[d]}
    garbage = {
        b.digest: b.size
        for d, blobs in pushed.blobs.items()
        if d not in remaining
        for b in blobs
        if b.digest not in kept_blobs
    }
    preview = ac(home, "adm", "registry", "gc")
    assert f"Would delete {len(garbage)} blobs" in preview.stdout
    before = stored_bytes(server)
    reclaim = ac(home, "adm", "registry", "gc", "--confirm")
    assert f"Deleted {len(garbage)} blobs" in reclaim.stdout
    assert "Freed up" in reclaim.stdout
    assert before - stored_bytes(server) == sum(garbage.values())
    assert "Would delete 0 blobs" in ac(home, "adm", "registry", "gc").stdout

    refused = ac(home, "adm", "prune", "images", "--undo", second_run, "--confirm", check=False)
    assert refused.returncode != 0 and "garbage collection" in refused.stderr

    # Every image that still has metadata pulls byte for byte.
    for digest in sorted(remaining & set(pushed.blobs)):
        repo = "cpaas-system/core" if digest in core else "team-a/demo"
        out = tmp_path / f"pull-{digest[7:19]}"
        result = subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                f"--src-registry-token={server.admin_token}",
                f"--src-cert-dir={certs}",
                f"docker://{server.host}/{repo}@{digest}",
                f"oci:{out}:img",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        for blob in pushed.blobs[digest]:
            assert (out / "blobs" / "sha256" / blob.digest[7:]).read_bytes() == blob.data
    info = ac(home, "image", "info", f"{server.host}/team-a/demo:latest")
    assert "Digest:" in info.stdout and demo[7] in info.stdout


def test_non_pruner_is_refused_and_pruner_dry_run_needs_only_the_prune_resource(
    server: RegistryProcess,
) -> None:
    body = {"apiVersion": "image.alauda.io/v1", "kind": "ImagePrune", "spec": {}}
    with server.client(auth=("alice", "s3cret")) as alice:
        refused = alice.post("/apis/image.alauda.io/v1/imageprunes?dryRun=All", json=body)
        assert refused.status_code == 403
        gc = alice.post("/apis/image.alauda.io/v1/registrygcs?dryRun=All", json={"spec": {}})
        assert gc.status_code == 403
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-pruner"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:image-pruner",
        },
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
    }
    with server.client(server.admin_token) as admin:
        created = admin.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding)
        assert created.status_code == 201, created.text
    with server.client(auth=("alice", "s3cret")) as alice:
        allowed = alice.post("/apis/image.alauda.io/v1/imageprunes?dryRun=All", json=body)
        assert allowed.status_code == 201, allowed.text
        assert allowed.json()["status"]["dryRun"] is True
