"""Finding cosign-style signatures among manifests, and naming them as ImageSignatures.

cosign attaches a signature to image `sha256:<hex>` either as a manifest tagged
`sha256-<hex>.sig` or (OCI 1.1 referrers mode) as a manifest whose `subject` is the image
(sigstore cosign `specs/SIGNATURE_SPEC.md`). Each `application/vnd.dev.cosign.simplesigning.
v1+json` layer of such a manifest is one signature: the layer blob is the signed payload,
its `dev.cosignproject.cosign/signature` annotation the signature. `cosign_signatures_for`
turns a manifest plus a way to read blobs into stored-form signatures; it is pure apart
from the reader, so the registry push path and `ac adm verify-image-signature` (which
reads through `/v2/`) share it. Names are derived from the content, so finding the same
signature twice yields the same name and the duplicate is refused rather than repeated.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from imageregistry.httpinput import InvalidJSON, load_json
from imageregistry.signatures import cosign

BlobReader = Callable[[str], bytes | None]
_SIG_TAG_RE = re.compile(r"^(sha256)-([a-f0-9]{64})\.sig$")


@dataclass(frozen=True)
class FoundSignature:
    """A cosign signature found in a manifest, in the stored (ImageSignature) form."""

    name_suffix: str
    content: bytes

    def name_for(self, image_digest: str) -> str:
        return f"{image_digest}@{self.name_suffix}"


def image_for_signature_tag(tag: str) -> str | None:
    """`sha256-<hex>.sig` → `sha256:<hex>`; None for any other tag."""
    match = _SIG_TAG_RE.match(tag)
    return f"{match.group(1)}:{match.group(2)}" if match else None


def subject_of(manifest_bytes: bytes) -> str | None:
    """The `subject.digest` of a manifest, if it has one."""
    try:
        doc = load_json(manifest_bytes)
    except InvalidJSON:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def cosign_signatures_for(manifest_bytes: bytes, read_blob: BlobReader) -> list[FoundSignature]:
    """The cosign signatures carried by a manifest; layers whose blob is missing or does
    not match its digest are skipped (a signature that cannot be read cannot be trusted)."""
    found = []
    for layer in cosign.cosign_signature_layers(manifest_bytes):
        payload = read_blob(layer.digest)
        if payload is None or len(payload) != layer.size:
            continue
        if "sha256:" + hashlib.sha256(payload).hexdigest() != layer.digest:
            continue
        content = cosign.encode_cosign_content(payload, layer.signature_b64)
        suffix = "cosign-" + hashlib.sha256(content).hexdigest()[:32]
        found.append(FoundSignature(suffix, content))
    return found


def signature_target(manifest_bytes: bytes, tag: str | None) -> str | None:
    """The image a pushed manifest signs: its `subject`, else the image its `.sig` tag names."""
    return subject_of(manifest_bytes) or (image_for_signature_tag(tag) if tag else None)


def payload_digests(manifest_bytes: bytes) -> list[str]:
    """The blobs `cosign_signatures_for` will ask for (so async callers can read them first)."""
    return [layer.digest for layer in cosign.cosign_signature_layers(manifest_bytes)]
