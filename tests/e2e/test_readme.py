"""The README's quick start and the marked blocks of docs/operations.md (first start,
first push, permissions, usage, delete and undo, prune, GC), run as written against a
server the test starts, so the documents cannot rot.

Each block is the ```sh block after a `<!-- NAME: tests/e2e/test_readme.py ... -->`
marker. It runs under `bash -euo pipefail` (any failing line fails the test) in a
directory laid out like a checkout after `./scripts/install-and-serve`: `data/` is the
running server's data dir, `.venv` and `scripts` are this checkout's, HOME is a fresh
directory. The only edits to the text are the server's address (the documented
127.0.0.1:5000 becomes the test server's free port) and, for operations.md, its data dir
(/var/lib/registry becomes the test's).
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
        if not key.startswith(("KUBECONFIG", "REGISTRY_AUTH_FILE", "XDG_"))
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
    markers = ("first start", "first push", "permissions", "usage", "undo a delete", "prune", "gc")
    blocks = [shell_block(operations, m) for m in markers]
    script = "\n".join(blocks)
    assert "/var/lib/registry" in script and DOCUMENTED_LISTEN in script
    script = script.replace("/var/lib/registry", str(work / "data"))
    result = run_block(script.replace(DOCUMENTED_LISTEN, server.host), work, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "system:admin" in result.stdout
    assert "Would restore tag item team-a/demo:latest -> sha256:" in result.stdout
    assert "Summary: restored 1 image object(s), restored 1 image stream tag item(s)" in (
        result.stdout
    )
    assert '"Name": "127.0.0.1' in result.stdout  # skopeo inspect after the undo
    assert "Would delete 0 blobs" in result.stdout  # gc: the pushed image is in use
    assert (work / "image" / "index.json").is_file()
