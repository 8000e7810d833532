"""`ac image info` against an in-memory fake registry: digest checks, platforms, progress bar."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
from click.testing import CliRunner

from imageregistry.cli.ac.main import main
from imageregistry.cli.ac.progress import Progress
from tests.unit.cli.test_session import kubeconfig

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Serves one tag from fixed blobs; `lie` makes it claim a digest the bytes do not have."""

    def __init__(self, lie: bool = False) -> None:
        self.config = json.dumps({"os": "linux", "architecture": "arm64"}).encode()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"digest": _digest(self.config), "size": len(self.config)},
                "layers": [{"digest": "sha256:" + "a" * 64, "size": 2048}],
            }
        ).encode()
        self.index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "digest": _digest(self.manifest),
                        "platform": {"os": "linux", "architecture": "arm64"},
                    },
                    {
                        "digest": "sha256:" + "b" * 64,
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                ],
            }
        ).encode()
        self.lie = lie
        self.tag_body = self.manifest

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/v2/ns/demo/blobs/{_digest(self.config)}":
            return httpx.Response(200, content=self.config)
        by_ref = {"latest": self.tag_body, _digest(self.manifest): self.manifest}
        body = by_ref.get(path.rsplit("/", 1)[-1])
        if not path.startswith("/v2/ns/demo/manifests/") or body is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        claimed = "sha256:" + "0" * 64 if self.lie else _digest(body)
        media_type = json.loads(body)["mediaType"]
        headers = {"Docker-Content-Digest": claimed, "Content-Type": media_type}
        return httpx.Response(200, content=body, headers=headers)


def run(tmp_path: Path, fake: FakeRegistry, *args: str) -> tuple[int, str, str]:
    config = kubeconfig(tmp_path / "kc", server="https://registry.test")
    result = CliRunner().invoke(
        main,
        ["image", "info", "registry.test/ns/demo:latest", "--kubeconfig", str(config), *args],
        obj=httpx.MockTransport(fake.handle),
    )
    return result.exit_code, result.stdout, result.stderr


def test_shows_the_digest_and_media_type_and_nothing_on_a_non_tty_stderr(tmp_path: Path) -> None:
    fake = FakeRegistry()
    code, out, err = run(tmp_path, fake)
    assert code == 0, err
    assert f"Digest:        {_digest(fake.manifest)}\n" in out
    assert f"Media Type:    {OCI_MANIFEST}\n" in out
    assert "Manifest List:" not in out
    assert err == ""  # CliRunner's stderr is not a terminal: no progress bar


def test_a_manifest_that_does_not_hash_to_the_claimed_digest_fails(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, FakeRegistry(lie=True))
    assert code == 1 and out == ""
    assert err.startswith("error: manifest digest mismatch") and err.count("\n") == 1


def test_an_index_needs_a_platform_and_shows_the_chosen_child(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.tag_body = fake.index
    code, out, err = run(tmp_path, fake)
    assert code == 1 and out == ""
    assert "linux/arm64, linux/amd64" in err and "--filter-by-os" in err
    assert err.count("\n") == 1
    code, out, err = run(tmp_path, fake, "--filter-by-os", "linux/arm64")
    assert code == 0, err
    assert f"Digest:        {_digest(fake.manifest)}\n" in out
    assert f"Manifest List: {_digest(fake.index)}\n" in out
    assert "Arch:          arm64" in out
    code, _, err = run(tmp_path, fake, "--filter-by-os", "windows/amd64")
    assert code == 1 and "no image for platform windows/amd64" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    with Progress("fetching", stream=quiet) as progress:
        progress.total = 4
        progress.step("fetching manifest")
        progress.update(2)
    assert quiet.getvalue() == ""
    tty = FakeTerminal()
    with Progress("fetching", stream=tty) as progress:
        progress.total = 4
        progress.step("fetching manifest")
    drawn = tty.getvalue()
    assert "fetching manifest" in drawn and "0/4" in drawn
    assert drawn.endswith("\r\x1b[2K")  # the bar is erased when done
