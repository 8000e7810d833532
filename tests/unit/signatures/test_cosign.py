"""Cosign-format signatures: ECDSA round trip, manifest layout, stored form."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.signatures.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    CosignLayer,
    Descriptor,
    build_cosign_signature_manifest,
    cosign_signature_layers,
    decode_cosign_content,
    encode_cosign_content,
    sign_cosign,
    signature_tag,
    verify_cosign,
)
from imageregistry.signatures.errors import MalformedSignature, SignatureVerificationError
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload

DIGEST = "sha256:" + "ef" * 32
PAYLOAD = build_payload("reg.example.com/ns/app", DIGEST, signature_type=COSIGN_TYPE)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_sign_then_verify(key: ec.EllipticCurvePrivateKey) -> None:
    verify_cosign(PAYLOAD, sign_cosign(PAYLOAD, key), _pem(key))


def test_tampered_payload_fails(key: ec.EllipticCurvePrivateKey) -> None:
    signature = sign_cosign(PAYLOAD, key)
    with pytest.raises(SignatureVerificationError, match="does not match"):
        verify_cosign(PAYLOAD.replace(b"ns/app", b"ns/apq"), signature, _pem(key))


def test_other_key_fails(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureVerificationError, match="does not match"):
        verify_cosign(PAYLOAD, sign_cosign(PAYLOAD, key), _pem(other))


def test_non_base64_signature_fails(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(SignatureVerificationError, match="base64"):
        verify_cosign(PAYLOAD, "!!!", _pem(key))


def test_manifest_layout_and_layer_discovery(key: ec.EllipticCurvePrivateKey) -> None:
    signature = sign_cosign(PAYLOAD, key)
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 1234)
    manifest_bytes, config = build_cosign_signature_manifest(PAYLOAD, signature, subject)
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert manifest["config"]["size"] == len(config)
    assert manifest["subject"] == {"mediaType": subject.media_type, "size": 1234, "digest": DIGEST}
    layer = manifest["layers"][0]
    assert layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE
    assert layer["annotations"] == {SIGNATURE_ANNOTATION: signature}
    payload_digest = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    assert json.loads(config)["rootfs"] == {"type": "layers", "diff_ids": [payload_digest]}
    assert cosign_signature_layers(manifest_bytes) == [
        CosignLayer(payload_digest, len(PAYLOAD), signature)
    ]
    assert b" " not in manifest_bytes  # compact, as Go's encoding/json writes it


def test_tag_form_has_no_subject() -> None:
    manifest_bytes, _ = build_cosign_signature_manifest(PAYLOAD, "c2ln")
    assert "subject" not in json.loads(manifest_bytes)


def test_layers_without_signature_annotation_are_ignored() -> None:
    manifest = {
        "schemaVersion": 2,
        "layers": [
            {"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": DIGEST, "size": 3},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST, "size": 3},
        ],
    }
    assert cosign_signature_layers(json.dumps(manifest).encode()) == []
    assert cosign_signature_layers(b"not json") == []


def test_signature_tag() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ef" * 32 + ".sig"


def test_stored_content_round_trip() -> None:
    content = encode_cosign_content(PAYLOAD, "c2ln")
    assert json.loads(content) == {
        "payload": base64.b64encode(PAYLOAD).decode(),
        "signature": "c2ln",
    }
    decoded = decode_cosign_content(content)
    assert (decoded.payload, decoded.signature_b64) == (PAYLOAD, "c2ln")
    with pytest.raises(MalformedSignature, match="payload"):
        decode_cosign_content(b'{"signature":"c2ln"}')
