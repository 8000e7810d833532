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


def write_layout(
    root: Path,
    layers: list[Blob],
    env: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[Path, Blob, Blob]:
    """An OCI layout dir with one image; returns (dir, manifest, config)."""
    config = blob(
        json.dumps(
            {
                "created": "2026-01-01T00:00:00Z",
                "architecture": "amd64",
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
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
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
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for b in [*layers, config, manifest]:
        (blobs / b.digest.split(":")[1]).write_bytes(b.data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.digest,
                "size": manifest.size,
                "annotations": {"org.opencontainers.image.ref.name": "img"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    return root, manifest, config


def push(layout: Path, dest: str, token: str, ca_dir: Path) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            f"--dest-registry-token={token}",
            f"--dest-cert-dir={ca_dir}",
            f"oci:{layout}:img",
            f"docker://{dest}",
        ],
        check=True,
        capture_output=True,
    )
