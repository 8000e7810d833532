"""Cosign (sigstore) style image signatures: ECDSA over a simple-signing payload.

Facts from sigstore cosign `specs/SIGNATURE_SPEC.md`: the payload is stored as a layer blob
of media type `application/vnd.dev.cosign.simplesigning.v1+json`; the base64 of the DER
ECDSA-P256/SHA-256 signature over exactly those bytes sits in the layer annotation
`dev.cosignproject.cosign/signature`; the signature manifest is an OCI image manifest found
under the tag `sha256-<hex>.sig` or, in OCI 1.1 referrers mode, via its `subject`. The
config blob is the go-containerregistry config of an empty image with that one layer
appended, which is what cosign writes. Inside the registry a cosign signature is stored as
an ImageSignature of type `cosign` whose content is the compact JSON
`{"payload":"<base64 payload>","signature":"<base64 DER signature>"}` (see
`encode_cosign_content`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.httpinput import InvalidJSON, load_json
from imageregistry.signatures.errors import MalformedSignature, SignatureVerificationError
from imageregistry.signatures.simplesigning import load_strict_json

COSIGN_TYPE_NAME = "cosign"
SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
# Both the registry push path and the verifier read every payload layer into memory, and
# a manifest may name any blob; a real payload is well under 1 KiB, so bound what is read.
MAX_PAYLOAD_BYTES = 1 << 20
MAX_SIGNATURE_LAYERS = 32


@dataclass(frozen=True)
class CosignLayer:
    """A signature layer descriptor found in a cosign signature manifest."""

    digest: str
    size: int
    signature_b64: str


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor, used for the optional `subject`."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class CosignContent:
    """The stored form of a cosign signature: payload bytes plus base64 signature."""

    payload: bytes
    signature_b64: str


def public_key_id(public_key_pem: bytes) -> str:
    """A stable identifier for a PEM public key: sha256 hex of its DER SubjectPublicKeyInfo."""
    key = _load_public_key(public_key_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _load_public_key(public_key_pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        raise SignatureVerificationError(f"cannot read PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureVerificationError("the PEM public key is not an ECDSA key")
    return key


def verify_cosign(payload: bytes, signature_b64: str, public_key_pem: bytes) -> None:
    """Check that *signature_b64* is an ECDSA/SHA-256 signature of *payload* by the key."""
    key = _load_public_key(public_key_pem)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureVerificationError("cosign signature is not valid base64") from exc
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureVerificationError(
            "cosign signature does not match the payload for this public key"
        ) from exc


def sign_cosign(payload: bytes, private_key: ec.EllipticCurvePrivateKey) -> str:
    """Sign *payload* the way cosign does; return the base64 DER signature."""
    return base64.b64encode(private_key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def cosign_signature_layers(manifest_json: bytes) -> list[CosignLayer]:
    """Return the simple-signing layers (with their signatures) of a manifest, if any."""
    try:
        manifest = load_json(manifest_json)
    except InvalidJSON:
        return []
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        return []
    found = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLESIGNING_MEDIA_TYPE:
            continue
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if isinstance(signature, str) and isinstance(digest, str) and _is_payload_size(size):
            found.append(CosignLayer(digest=digest, size=size, signature_b64=signature))
    return found[:MAX_SIGNATURE_LAYERS]


def _is_payload_size(value: object) -> TypeGuard[int]:
    return (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PAYLOAD_BYTES
    )


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def cosign_config(payload: bytes) -> bytes:
    """The config blob cosign writes: an empty go-containerregistry image plus one layer.

    Field order follows go-containerregistry's `v1.ConfigFile` struct (empty strings for
    architecture/os, zero Go time for created, one history entry, the payload's digest as
    the only diff id since the layer is uncompressed).
    """
    zero_time = "0001-01-01T00:00:00Z"
    return _compact(
        {
            "architecture": "",
            "created": zero_time,
            "history": [{"created": zero_time}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [_digest(payload)]},
            "config": {},
        }
    )


def build_cosign_signature_manifest(
    payload: bytes, signature_b64: str, subject: Descriptor | None = None
) -> tuple[bytes, bytes]:
    """Build the signature manifest and its config blob; returns `(manifest, config)`.

    With *subject* the manifest also names the signed image (OCI image-spec v1.1
    `subject`), so the registry lists it as a referrer of that image.
    """
    config = cosign_config(payload)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": OCI_CONFIG_MEDIA_TYPE,
            "size": len(config),
            "digest": _digest(config),
        },
        "layers": [
            {
                "mediaType": SIMPLESIGNING_MEDIA_TYPE,
                "size": len(payload),
                "digest": _digest(payload),
                "annotations": {SIGNATURE_ANNOTATION: signature_b64},
            }
        ],
    }
    if subject is not None:
        manifest["subject"] = {
            "mediaType": subject.media_type,
            "size": subject.size,
            "digest": subject.digest,
        }
    return _compact(manifest), config


def signature_tag(image_digest: str) -> str:
    """The tag cosign stores an image's signatures under: `sha256-<hex>.sig`."""
    return image_digest.replace(":", "-", 1) + ".sig"


def encode_cosign_content(payload: bytes, signature_b64: str) -> bytes:
    """Serialize the stored form of a cosign signature (ImageSignature `content`)."""
    return _compact({"payload": base64.b64encode(payload).decode(), "signature": signature_b64})


def decode_cosign_content(content: bytes) -> CosignContent:
    """Parse the stored form written by `encode_cosign_content`."""
    doc = load_strict_json(content, "cosign signature content")
    if not isinstance(doc, dict):
        raise MalformedSignature("cosign signature content must be a JSON object")
    payload_b64, signature_b64 = doc.get("payload"), doc.get("signature")
    if not isinstance(payload_b64, str) or not isinstance(signature_b64, str):
        raise MalformedSignature(
            "cosign signature content needs string fields 'payload' and 'signature'"
        )
    try:
        payload = base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedSignature("cosign signature payload is not valid base64") from exc
    return CosignContent(payload=payload, signature_b64=signature_b64)
