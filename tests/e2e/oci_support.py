"""Helpers for the OCI end-to-end tests: OCI layouts, skopeo and the pull-time policy."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from imageregistry.metadata.signature_policy import POLICY_ANNOTATION


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_blob(client: httpx.Client, data: bytes, repo: str = "team/app") -> str:
    """`data` pushed as one blob of `repo` in a single monolithic POST; its digest."""
    digest = sha(data)
    pushed = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert pushed.status_code == 201, pushed.text
    return digest


def blob_redirect(client: httpx.Client, digest: str, repo: str = "team/app") -> str:
    """Where a whole-blob GET of `digest` is redirected (it must answer 307)."""
    answer = client.get(f"/v2/{repo}/blobs/{digest}")
    assert answer.status_code == 307, answer.text
    return str(answer.headers["location"])


def image_manifest(config: bytes, layers: Sequence[bytes]) -> bytes:
    """An OCI image manifest naming ``config`` and uncompressed tar ``layers`` by digest."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
    ).encode()


@dataclass(frozen=True)
class Layout:
    path: Path
    manifest_digest: str
    blobs: dict[str, bytes]


def _tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), sha(raw.getvalue())


def build_layout(
    path: Path, seed: str, tag: str = "v1", layers: int = 3, filler: int = 0
) -> Layout:
    """A multi-layer OCI image layout (image-spec image-layout.md) with one tagged image;
    `filler` adds that many incompressible bytes to each layer."""
    blobs_dir = path / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = sha(data)
        (blobs_dir / digest.split(":")[1]).write_bytes(data)
        blobs[digest] = data
        return digest

    descriptors, diff_ids = [], []
    for i in range(layers):
        files = {f"file-{i}.txt": f"{seed} layer {i}\n".encode() * (i + 1)}
        if filler:
            files[f"filler-{i}.bin"] = random.Random(f"{seed}-{i}").randbytes(filler)
        layer, diff_id = _tar_gz(files)
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": put(layer),
                "size": len(layer),
            }
        )
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "created": "2024-02-03T04:05:06Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": [f"SEED={seed}"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    digest = put(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return Layout(path, digest, blobs)


def assert_copied(out: Path, layout: Layout) -> None:
    """The OCI layout at `out` holds `layout`'s image, every blob byte for byte."""
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == layout.manifest_digest
    for digest, data in layout.blobs.items():
        assert (out / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def skopeo_round_trip(host: str, token: str, layout: Layout, reference: str, out: Path) -> None:
    """`layout`'s image copied by skopeo to `host/reference` (a plain-HTTP registry) and
    back into the OCI layout `out`, which must then hold it byte for byte."""
    pushed = skopeo(
        "copy",
        "--dest-tls-verify=false",
        *("--dest-creds", f"x:{token}"),
        f"oci:{layout.path}:v1",
        f"docker://{host}/{reference}",
    )
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo(
        "copy",
        "--src-tls-verify=false",
        *("--src-registry-token", token),
        f"docker://{host}/{reference}",
        f"oci:{out}:copy",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert_copied(out, layout)


def require_signatures(admin: httpx.Client, namespace: str) -> None:
    """Turn on the namespace's signature policy with a merge patch, as `kubectl annotate` does."""
    r = admin.patch(
        f"/api/v1/namespaces/{namespace}",
        content=json.dumps({"metadata": {"annotations": {POLICY_ANNOTATION: "true"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
