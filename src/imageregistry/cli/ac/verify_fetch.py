"""What `ac adm verify-image-signature` reads before it verifies anything.

From the image API: the Image (its `dockerImageReference` names the repository, its
`signatures[]` the stored signatures). From the registry, over `/v2/` as the same user: the
manifest, re-hashed so the digest the signatures must name is the digest of bytes actually
served; and cosign signatures attached under the `sha256-<hex>.sig` tag or as referrers of
the image (sigstore cosign `specs/SIGNATURE_SPEC.md`). When the namespace signature policy
refuses the manifest pull (the image is not yet trusted, which is why it is being
verified), the manifest kept in the Image object is re-hashed instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.signatures.discovery import cosign_signatures_for
from imageregistry.signatures.verify import StoredSignature

IMAGES_PATH = f"{apigroups.IMAGE_API}/images"
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass(frozen=True)
class ManifestCheck:
    """Whether the served manifest hashes to the image digest, and how that was checked."""

    ok: bool
    detail: str


def load_image(api: httpx.Client, digest: str) -> dict[str, Any]:
    response = api.get(f"{IMAGES_PATH}/{digest}")
    if response.status_code == 404:
        raise CliError(f"image {digest} not found")
    if response.status_code >= 400:
        raise from_response(response)
    body = response.json()
    if not isinstance(body, dict):
        raise CliError(f"the server answered an unexpected body for image {digest}")
    return body


def repository_of(image: dict[str, Any]) -> str:
    """`<ns>/<stream>` from `dockerImageReference` (`host/ns/stream@digest`)."""
    reference = str(image.get("dockerImageReference") or "")
    name = reference.split("@", 1)[0]
    parts = name.split("/")
    if len(parts) < 3:
        raise CliError(
            f"image {image.get('metadata', {}).get('name')} is not in any repository "
            f"(dockerImageReference {reference!r}); cannot fetch its manifest"
        )
    return "/".join(parts[-2:])


def stored_signatures(image: dict[str, Any]) -> list[StoredSignature]:
    out = []
    for entry in image.get("signatures") or []:
        name = entry.get("name") or (entry.get("metadata") or {}).get("name")
        try:
            content = base64.b64decode(str(entry.get("content") or ""), validate=True)
        except (binascii.Error, ValueError):
            content = b""
        out.append(StoredSignature(str(name), str(entry.get("type") or "atomic"), content))
    return out


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_manifest(
    registry: httpx.Client, repo: str, digest: str, image: dict[str, Any]
) -> ManifestCheck:
    response = registry.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
    if response.status_code == 200:
        got = _sha256(response.content)
        if got != digest:
            return ManifestCheck(
                False, f"the registry served a manifest hashing to {got}, not {digest}"
            )
        return ManifestCheck(True, f"manifest fetched from {repo} hashes to {digest}")
    kept = image.get("dockerImageManifest")
    if response.status_code == 403 and isinstance(kept, str) and kept:
        got = _sha256(kept.encode())
        if got != digest:
            return ManifestCheck(False, f"the stored manifest hashes to {got}, not {digest}")
        return ManifestCheck(True, f"registry refused the pull; stored manifest hashes to {digest}")
    error = from_response(response)
    return ManifestCheck(False, f"cannot fetch the manifest of {repo}@{digest}: {error}")


def discover_cosign(
    registry: httpx.Client, repo: str, digest: str, known: set[bytes]
) -> list[StoredSignature]:
    """cosign signatures of the image found in the registry and not already stored."""

    def read_blob(blob: str) -> bytes | None:
        response = registry.get(f"/v2/{repo}/blobs/{blob}", follow_redirects=True)
        return response.content if response.status_code == 200 else None

    manifests: list[bytes] = []
    tag = digest.replace(":", "-", 1) + ".sig"
    tagged = registry.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
    if tagged.status_code == 200:
        manifests.append(tagged.content)
    referrers = registry.get(f"/v2/{repo}/referrers/{digest}")
    if referrers.status_code == 200:
        for entry in (referrers.json() or {}).get("manifests") or []:
            ref = registry.get(
                f"/v2/{repo}/manifests/{entry.get('digest')}", headers={"Accept": MANIFEST_ACCEPT}
            )
            if ref.status_code == 200 and _sha256(ref.content) == entry.get("digest"):
                manifests.append(ref.content)
    found: dict[str, StoredSignature] = {}
    for manifest in manifests:
        for sig in cosign_signatures_for(manifest, read_blob):
            if sig.content not in known:
                name = sig.name_for(digest)
                found[name] = StoredSignature(name, "cosign", sig.content)
    return list(found.values())
