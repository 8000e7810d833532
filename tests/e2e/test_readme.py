"""The README's quick start and the marked blocks of docs/operations.md (first start,
first push, permissions, usage, quotas and limits, delete and undo, signing and verifying a
signature, a puller's token, prune, GC, blob verification), run as written against a server the test
starts, so the documents cannot rot. Every other ```sh block of either document is
listed (NOT_RUN, README_NOT_RUN) with the reason it cannot run here.

Each block is the ```sh block after a `<!-- NAME: tests/e2e/test_readme.py ... -->`
marker. It runs under `bash -euo pipefail` (any failing line fails the test) in a
directory laid out like a checkout after `./scripts/install-and-serve`: `data/` is the
running server's data dir, `.venv` and `scripts` are this checkout's, HOME is a fresh
directory (so the GnuPG keyring is fresh too). The only edits to the text are the server's
address (the documented 127.0.0.1:5000 becomes the test server's free port) and, for
docs/operations.md, its data dir (/var/lib/registry becomes the test's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.config import Settings
from tests.support.server import RegistryProcess

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
DOCUMENTED_LISTEN = "127.0.0.1:5000"
MARKER = re.compile(r"<!-- ([^:>]+): tests/e2e/test_readme.py runs this block as written -->\n$")
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)

# The marked blocks of docs/operations.md, in document order: they run as one script, as a
# reader going down the page would run them.
OPERATIONS_MARKERS = (
    "first start",
    "first push",
    "permissions",
    "puller token",
    "undo a delete",
    "immutable tags",
    "usage",
    "quotas",
    "signatures",
    "prune",
    "gc",
    "verify",
)

# The ```sh blocks of docs/operations.md that the test cannot run, each named by a line
# it contains, with the reason: everything else must be marked and run.
NOT_RUN = {
    "./scripts/install-and-serve --data-dir": "starts the server in the foreground (the test "
    "starts its own)",
    "image-registry serve --plain-http --blob-listen": "starts a second server in the foreground",
    "# on a containerd host": "needs containerd configured under /etc/containerd",
    "# on the cluster that runs the pods": "needs a Kubernetes cluster",
    "image-registry serve --storage s3://": "needs an S3 endpoint and credentials",
    "image-registry serve --data-dir /var/lib/registry-a": "starts two servers in the "
    "foreground on other machines' addresses (tests/e2e/test_replicas.py runs this shape)",
    "podman build": "needs the base image from a registry the test machines cannot reach",
    "kubectl apply -k deploy/kubernetes/overlays/single": "needs a Kubernetes cluster",
    "kubectl apply -k deploy/kubernetes/overlays/cluster": "needs a Kubernetes cluster "
    "(tests/e2e/test_cluster_mode.py plays the cluster with a second server)",
    "export KUBECONFIG=$PWD/registry-admin.kubeconfig": "needs the registry deployed in a "
    "Kubernetes cluster",
    "kubectl create namespace image-registry": "needs a Kubernetes cluster, PostgreSQL and a "
    "bucket",
    "kubectl -n kube-system get configmap extension-apiserver-authentication": "needs a "
    "Kubernetes cluster (tests/e2e/test_deploy_aggregated.py runs the pod the component "
    "describes and plays the aggregator)",
    "> /etc/prometheus/registry-token": "writes Prometheus' configuration under /etc "
    "(tests/e2e/test_metrics.py binds system:monitoring and scrapes with Debian's prometheus)",
}
README_NOT_RUN = {
    "./scripts/test": "installs system packages, runs the whole suite and then serves in the "
    "foreground",
}


def shell_block(document: Path, marker: str) -> str:
    """The first ```sh block after the HTML comment starting with `marker`."""
    text = document.read_text()
    start = text.index(f"<!-- {marker}")
    found = re.compile(r"```sh\n(.*?)```", re.DOTALL).search(text, start)
    assert found is not None, f"no ```sh block after {marker!r} in {document}"
    return found.group(1)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[tuple[Path, RegistryProcess]]:
    """A directory like a fresh checkout whose `./data` belongs to a running server."""
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(VENV)
    (work / "scripts").symlink_to(ROOT / "scripts")
    with RegistryProcess(data_dir=work / "data") as server:
        yield work, server


def run_block(block: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBECONFIG", "REGISTRY_AUTH_FILE", "XDG_", "GNUPGHOME"))
    }
    env["HOME"] = str(home)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_documented_defaults_are_the_servers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert Settings().listen == DOCUMENTED_LISTEN and DOCUMENTED_LISTEN in readme
    assert Settings().data_dir == Path("./data") and "$PWD/data/admin.kubeconfig" in readme
    for script in ("install-and-serve", "test", "make-demo-image"):
        assert os.access(ROOT / "scripts" / script, os.X_OK), script


def test_readme_quick_start_runs_as_written(
    checkout: tuple[Path, RegistryProcess], tmp_path: Path
) -> None:
    work, server = checkout
    block = shell_block(ROOT / "README.md", "quick start")
    assert DOCUMENTED_LISTEN in block
    result = run_block(block.replace(DOCUMENTED_LISTEN, server.host), work, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "system:admin" in result.stdout  # kubectl auth whoami
    assert "team-a/demo" in result.stdout and "sha256:" in result.stdout  # ac adm top images
    # What the quick start pushed pulls back.
    with server.client(server.admin_token) as client:
        r = client.get("/v2/team-a/demo/manifests/latest")
        assert r.status_code == 200
        manifest = r.json()
        for blob in (manifest["config"], *manifest["layers"]):
            assert client.get(f"/v2/team-a/demo/blobs/{blob['digest']}").status_code == 200
    # The generated directories are ignored by git.
    ignored = subprocess.run(
        ["git", "check-ignore", "ca/", "my-image/", "image/", "data/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ignored.stdout.split() == ["ca/", "my-image/", "image/", "data/"]


def test_operations_blocks_run_as_written(
    checkout: tuple[Path, RegistryProcess], tmp_path: Path
) -> None:
    work, server = checkout
    operations = ROOT / "docs" / "operations.md"
    blocks = [shell_block(operations, m) for m in OPERATIONS_MARKERS]
    script = "\n".join(blocks)
    assert "/var/lib/registry" in script and DOCUMENTED_LISTEN in script
    script = script.replace("/var/lib/registry", str(work / "data"))
    home = tmp_path / "home"
    try:
        result = run_block(script.replace(DOCUMENTED_LISTEN, server.host), work, home)
    finally:  # skopeo's gpgme started an agent for the fresh keyring in HOME: stop it
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**{k: v for k, v in os.environ.items() if k != "GNUPGHOME"}, "HOME": str(home)},
            check=False,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "system:admin" in result.stdout
    assert "Would restore tag item team-a/demo:latest -> sha256:" in result.stdout
    assert "Summary: restored 1 image object(s), restored 1 image stream tag item(s)" in (
        result.stdout
    )
    assert '"Name": "127.0.0.1' in result.stdout  # skopeo inspect after the undo
    refused = 'tag v1.0 of team-a/demo is immutable by ImageTagPolicy "release"'
    assert refused in result.stderr  # the immutable tags block's `ac tag -d`
    assert "Deleted tag team-a/demo:v1.0." in result.stdout  # after the policy went
    assert "Would delete 0 blobs" in result.stdout  # gc: the pushed image is in use
    # Signatures: skopeo signed with the fresh key; both verifications (the keyring's
    # keys, then pub.gpg) confirmed it, the second saved it and the listing shows it.
    confirmed = f"Verified: identity {server.host}/team-a/demo:signed confirmed, signed by key"
    assert result.stdout.count(confirmed) == 2
    assert "Saved: 1 trusted signature(s) recorded on image sha256:" in result.stdout
    assert "type: Trusted" in result.stdout
    assert re.search(r"^sha256:\S+ +\S+/team-a/demo@sha256:\S+ +yes$", result.stdout, re.M)
    assert "serviceaccount/puller created" in result.stdout
    assert "Found 0 damaged blobs, marked 0 corrupt" in result.stdout  # verify --confirm
    assert '"dryRun": true' in result.stdout  # verify -o json
    assert (work / "image" / "index.json").is_file()


@pytest.mark.parametrize(
    ("document", "markers", "not_run"),
    [
        ("docs/operations.md", OPERATIONS_MARKERS, NOT_RUN),
        ("README.md", ("quick start",), README_NOT_RUN),
    ],
)
def test_every_shell_block_runs_or_says_why_not(
    document: str, markers: tuple[str, ...], not_run: dict[str, str]
) -> None:
    """A new ```sh block is either marked (and then run above) or listed with the reason
    it cannot run here, so no unrunnable example slips in unnoticed."""
    text = (ROOT / document).read_text()
    marked: list[str] = []
    unlisted: list[str] = []
    used = dict.fromkeys(not_run, 0)
    for block in SH_BLOCK.finditer(text):
        marker = MARKER.search(text, 0, block.start())
        if marker is not None:
            marked.append(marker.group(1))
            continue
        reasons = [key for key in not_run if key in block.group(1)]
        for key in reasons:
            used[key] += 1
        if len(reasons) != 1:
            unlisted.append(block.group(1))
    assert unlisted == [], "mark these blocks or list them as not run:\n" + "\n".join(unlisted)
    assert tuple(marked) == markers
    assert all(count == 1 for count in used.values()), used  # no stale or ambiguous entry
