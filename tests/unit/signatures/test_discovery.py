"""Finding cosign signatures in manifests and recording them on the signed image."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.cli.ac.verify import read_keys
from imageregistry.cli.ac.verify_fetch import repository_of, stored_signatures
from imageregistry.signatures import cosign, discovery
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload
from imageregistry.signatures.verify import StoredSignature, TrustedKeys, verify_signature

IMG = "sha256:" + "a" * 64
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _signed(subject: bool) -> tuple[bytes, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = build_payload("reg.example/ns/app:latest", IMG, signature_type=COSIGN_TYPE)
    desc = cosign.Descriptor(cosign.OCI_MANIFEST_MEDIA_TYPE, IMG, 10) if subject else None
    manifest, _config = cosign.build_cosign_signature_manifest(
        payload, cosign.sign_cosign(payload, key), desc
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return manifest, payload, pem


def _blobs(payload: bytes) -> dict[str, bytes]:
    return {"sha256:" + hashlib.sha256(payload).hexdigest(): payload}


def test_found_signature_verifies_and_is_named_by_content() -> None:
    manifest, payload, pem = _signed(subject=True)
    found = discovery.cosign_signatures_for(manifest, _blobs(payload).get)
    assert len(found) == 1
    again = discovery.cosign_signatures_for(manifest, _blobs(payload).get)
    assert found == again  # same content, same name: rediscovery is a duplicate
    name = found[0].name_for(IMG)
    assert name.startswith(IMG + "@cosign-")
    outcome = verify_signature(
        IMG,
        StoredSignature(name, "cosign", found[0].content),
        "reg.example/ns/app:latest",
        TrustedKeys(pem_keys=(pem,)),
    )
    assert outcome.ok, outcome.reason
    assert discovery.payload_digests(manifest) == list(_blobs(payload))


def test_unreadable_or_mismatched_payloads_are_skipped() -> None:
    manifest, payload, _pem = _signed(subject=True)
    assert discovery.cosign_signatures_for(manifest, lambda _d: None) == []
    assert discovery.cosign_signatures_for(manifest, lambda _d: payload + b" ") == []
    assert discovery.cosign_signatures_for(b"not json", _blobs(payload).get) == []


def test_signature_target_from_subject_or_tag() -> None:
    with_subject, _, _ = _signed(subject=True)
    tagged, _, _ = _signed(subject=False)
    assert discovery.signature_target(with_subject, None) == IMG
    assert discovery.signature_target(tagged, cosign.signature_tag(IMG)) == IMG
    assert discovery.signature_target(tagged, "latest") is None
    assert discovery.image_for_signature_tag("sha256-" + "b" * 64 + ".sig") == "sha256:" + "b" * 64
    assert discovery.image_for_signature_tag("sha256-xyz.sig") is None


def test_cli_key_files_and_image_fields(tmp_path: Path) -> None:
    _manifest, _payload, pem = _signed(subject=False)
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "k.gpg").write_bytes(b"\x99\x00binary keyring")
    keys = read_keys((str(tmp_path / "k.pem"), str(tmp_path / "k.gpg")))
    assert keys.pem_keys == (pem,)
    assert keys.gpg_keyrings == (b"\x99\x00binary keyring",)
    image = {
        "metadata": {"name": IMG},
        "dockerImageReference": f"reg.example:5000/ns/app@{IMG}",
        "signatures": [{"name": f"{IMG}@x", "type": "atomic", "content": "AAE="}],
    }
    assert repository_of(image) == "ns/app"
    assert stored_signatures(image) == [StoredSignature(f"{IMG}@x", "atomic", b"\x00\x01")]
