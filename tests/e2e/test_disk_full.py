"""A full disk under the blob store: 507 with the OCI envelope and
`Retry-After`, nothing partial left behind, the upload resumable, logged once.

The disk is real: a small tmpfs mounted as the server's `--storage` (needs root, so the
module is skipped elsewhere). Bytes run out by writing a ballast file next to the store;
inodes (for the commit's new directories) run out by creating empty files until the
filesystem says ENOSPC. The database stays on the ordinary disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import RegistryProcess

REPO = "team/full"
MOUNT_SIZE = 8 << 20
FULL_LOG = "is full ("


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path = tmp_path_factory.mktemp("small-disk")
    options = f"size={MOUNT_SIZE},nr_inodes=400"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def server(mount: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("full")
    store = mount / "store"
    with RegistryProcess(data_dir=root / "data", extra_args=["--storage", str(store)]) as process:
        yield process


@pytest.fixture
def client(server: RegistryProcess) -> Iterator[httpx.Client]:
    with server.client(server.admin_token, timeout=60.0) as c:
        yield c


def fill_bytes(mount: Path, leave: int) -> Path:
    """A ballast file taking all but about `leave` bytes of the filesystem."""
    ballast = mount / "ballast"
    free = shutil.disk_usage(mount).free
    with ballast.open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * max(free - leave, 0))
    return ballast


def fill_inodes(mount: Path) -> Path:
    """Empty files until the filesystem has no inode left."""
    directory = mount / "inodes"
    directory.mkdir()
    for i in range(10_000):
        try:
            (directory / str(i)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return directory
    raise AssertionError("the filesystem never ran out of inodes")


def start(client: httpx.Client) -> str:
    started = client.post(f"/v2/{REPO}/blobs/uploads/")
    assert started.status_code == 202, started.text
    return str(started.headers["location"])


def staged(client: httpx.Client, location: str) -> int:
    status = client.get(location)
    assert status.status_code == 204
    return int(status.headers["range"].split("-")[1]) + 1


def assert_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "UNKNOWN" and "storage is full" in error["message"]
    assert int(response.headers["retry-after"]) > 0


def test_a_full_disk_while_staging_answers_507_and_the_upload_resumes(
    server: RegistryProcess, client: httpx.Client, mount: Path
) -> None:
    data = os.urandom(5 << 20)
    location = start(client)
    ballast = fill_bytes(mount, leave=3 << 20)  # room for the first 2 MiB block, not more
    try:
        refused = client.patch(location, content=data)
        assert_full(refused)
        kept = staged(client, location)
        assert 0 < kept < len(data)
        assert refused.headers["range"] == f"0-{max(kept - 1, 0)}"  # where to resume
        # A second try on the full disk: refused again, logged only once.
        again = client.patch(
            location,
            content=data[kept:],
            headers={"Content-Range": f"{kept}-{len(data) - 1}"},
        )
        assert_full(again)
        assert server.log_text().count(FULL_LOG) == 1
        monolithic = client.post(
            f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(data)}, content=data
        )
        assert_full(monolithic)
    finally:
        ballast.unlink()
    kept = staged(client, location)
    rest = client.patch(
        location, content=data[kept:], headers={"Content-Range": f"{kept}-{len(data) - 1}"}
    )
    assert rest.status_code == 202, rest.text
    done = client.put(rest.headers["location"], params={"digest": sha(data)})
    assert done.status_code == 201, done.text
    assert client.get(f"/v2/{REPO}/blobs/{sha(data)}").content == data
    uploads = mount / "store" / "uploads"
    assert not any(uploads.iterdir())  # the monolithic attempt left nothing behind


def test_a_full_disk_at_commit_answers_507_and_the_put_can_be_retried(
    server: RegistryProcess, client: httpx.Client, mount: Path
) -> None:
    prefixes = mount / "store" / "blobs" / "sha256"
    data = os.urandom(100_000)
    while (prefixes / hashlib.sha256(data).hexdigest()[:2]).exists():
        data = os.urandom(100_000)  # the commit must create a directory
    location = start(client)
    patched = client.patch(location, content=data)
    assert patched.status_code == 202
    location = patched.headers["location"]
    ballast = fill_inodes(mount)
    try:
        assert_full(client.put(location, params={"digest": sha(data)}))
        assert staged(client, location) == len(data)  # nothing lost
        assert client.head(f"/v2/{REPO}/blobs/{sha(data)}").status_code == 404
    finally:
        shutil.rmtree(ballast)
    done = client.put(location, params={"digest": sha(data)})
    assert done.status_code == 201, done.text
    assert client.get(f"/v2/{REPO}/blobs/{sha(data)}").content == data
