"""Build small OCI images on disk and push them with skopeo (shared by the `ac` e2e tests)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Blob:
    digest: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def blob(data: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), data)


def layer(name: str, size: int) -> Blob:
    """A gzipped tar with one file of `size` pseudo-random bytes (deterministic by name)."""
    payload = hashlib.sha256(name.encode()).digest() * (size // 32 + 1)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload[:size]))
    return blob(gzip.compress(raw.getvalue(), mtime=0))


def image_blobs(
    layers: list[Blob],
    env: list[str] | None = None,
    labels: dict[str, str] | None = None,
    arch: str = "amd64",
) -> tuple[Blob, Blob]:
    """The (manifest, config) of a linux image made of `layers`."""
    config = blob(
        json.dumps(
            {
                "created": "2026-01-01T00:00:00Z",
                "architecture": arch,
                "os": "linux",
                "author": "tests",
                "config": {
                    "Env": env or ["PATH=/usr/bin"],
                    "Entrypoint": ["/bin/app"],
                    "Cmd": ["--serve"],
                    "Labels": labels or {},
                },
                "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
            },
            sort_keys=True,
        ).encode()
    )
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config.digest,
                    "size": config.size,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": b.digest,
                        "size": b.size,
                    }
                    for b in layers
                ],
            }
        ).encode()
    )
    return manifest, config


def _write(root: Path, blobs: list[Blob], top: Blob, media_type: str) -> None:
    """An OCI layout dir holding `blobs`, with `top` named `img` in index.json."""
    directory = root / "blobs" / "sha256"
    directory.mkdir(parents=True, exist_ok=True)
    for b in [*blobs, top]:
        (directory / b.digest.split(":")[1]).write_bytes(b.data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": media_type,
        "digest": top.digest,
        "size": top.size,
        "annotations": {"org.opencontainers.image.ref.name": "img"},
    }
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def write_layout(
    root: Path,
    layers: list[Blob],
    env: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[Path, Blob, Blob]:
    """An OCI layout dir with one image; returns (dir, manifest, config)."""
    manifest, config = image_blobs(layers, env, labels)
    _write(root, [*layers, config], manifest, MANIFEST)
    return root, manifest, config


def write_index_layout(
    root: Path, platforms: dict[str, list[Blob]]
) -> tuple[Path, Blob, dict[str, Blob]]:
    """An OCI layout dir with a multi-arch index of linux images keyed by architecture.

    Returns (dir, index, {arch: manifest}).
    """
    manifests = {arch: image_blobs(layers, arch=arch) for arch, layers in platforms.items()}
    index = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [
                    {
                        "mediaType": MANIFEST,
                        "digest": manifest.digest,
                        "size": manifest.size,
                        "platform": {"os": "linux", "architecture": arch},
                    }
                    for arch, (manifest, _) in manifests.items()
                ],
            }
        ).encode()
    )
    blobs = [b for layers in platforms.values() for b in layers]
    blobs += [b for pair in manifests.values() for b in pair]
    _write(root, blobs, index, INDEX)
    return root, index, {arch: pair[0] for arch, pair in manifests.items()}


def push(layout: Path, dest: str, token: str, ca_dir: Path, all_platforms: bool = False) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            *(["--all"] if all_platforms else []),
            "--preserve-digests",
            f"--dest-registry-token={token}",
            f"--dest-cert-dir={ca_dir}",
            f"oci:{layout}:img",
            f"docker://{dest}",
        ],
        check=True,
        capture_output=True,
    )
