"""Hostile signature inputs at the core: parser disagreements, nesting, bombs, huge reads.

Each case was accepted (or crashed) before: duplicate JSON keys were read as the last
value, deep nesting raised RecursionError out of the verifier, gpg expanded compressed
messages from any key without bound, cosign layers of any size were read into memory,
and an image could collect more signatures than containers/image reads from the list.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.metadata import signature_limits as limits
from imageregistry.metadata import signatures as sigdb
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.signatures import cosign, discovery, gpg
from imageregistry.signatures.errors import MalformedSignature, SignatureVerificationError
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload, parse_payload
from imageregistry.signatures.verify import StoredSignature, TrustedKeys, verify_signature
from tests.support.rows import insert_manifest
from tests.unit.signatures.conftest import GpgSigner

IMG = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
REF = "reg.example/ns/app:latest"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _duplicated(field: bytes, first: bytes) -> bytes:
    """The honest payload for IMG with *field* repeated, the extra copy placed first."""
    honest = build_payload(REF, IMG)
    at = honest.index(field)
    return honest[:at] + field + first + b"," + honest[at:]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            _duplicated(b'"docker-manifest-digest":', f'"{OTHER}"'.encode()),
            "docker-manifest-digest",
        ),
        (_duplicated(b'"docker-reference":', b'"evil.example/x:latest"'), "docker-reference"),
        (_duplicated(b'"type":', b'"something else"'), "type"),
        (_duplicated(b'"critical":', b"{}"), "critical"),
    ],
)
def test_duplicate_keys_are_refused(data: bytes, key: str) -> None:
    with pytest.raises(MalformedSignature, match=f"duplicate JSON key '{key}'"):
        parse_payload(data)


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"critical":' * 100_000, b"{" * 5000])
def test_hostile_nesting_is_malformed_not_a_crash(data: bytes) -> None:
    with pytest.raises(MalformedSignature):
        parse_payload(data)
    with pytest.raises(MalformedSignature):
        cosign.decode_cosign_content(data)


def test_hostile_cosign_content_is_a_failed_outcome() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    sig = StoredSignature(f"{IMG}@x", "cosign", b"[" * 100_000)
    outcome = verify_signature(IMG, sig, REF, TrustedKeys(pem_keys=(pem,)))
    assert not outcome.ok
    assert "nested too deeply" in outcome.reason


def test_compression_bomb_from_any_key_is_refused(gpg_signer: GpgSigner) -> None:
    bomb = gpg_signer._gpg(
        "--compress-algo",
        "zlib",
        "-z",
        "9",
        "--local-user",
        gpg_signer.other_fingerprint,
        "--sign",
        stdin=b"\0" * (gpg.MAX_PAYLOAD_BYTES + (1 << 20)),
    )
    assert len(bomb) < 64 << 10
    with pytest.raises(SignatureVerificationError, match="larger than"):
        gpg.verify_signed_message(bomb, [gpg_signer.public_key()])


def test_payload_just_under_the_cap_still_verifies(gpg_signer: GpgSigner) -> None:
    payload = build_payload(REF, IMG, extra_optional={"pad": "x" * 1000})
    result = gpg.verify_signed_message(gpg_signer.sign(payload), [gpg_signer.public_key()])
    assert result.payload == payload


def _layer(payload_digest: str, size: int) -> dict[str, object]:
    return {
        "mediaType": cosign.SIMPLESIGNING_MEDIA_TYPE,
        "digest": payload_digest,
        "size": size,
        "annotations": {cosign.SIGNATURE_ANNOTATION: "c2ln"},
    }


def test_cosign_layers_are_bounded_in_size_and_number() -> None:
    big = _layer(OTHER, cosign.MAX_PAYLOAD_BYTES + 1)
    many = [_layer("sha256:" + f"{i:064x}", 10) for i in range(cosign.MAX_SIGNATURE_LAYERS + 5)]
    manifest = json.dumps({"layers": [big, *many]}).encode()
    layers = cosign.cosign_signature_layers(manifest)
    assert len(layers) == cosign.MAX_SIGNATURE_LAYERS
    assert OTHER not in discovery.payload_digests(manifest)
    assert cosign.cosign_signature_layers(b"[" * 100_000) == []
    assert discovery.subject_of(b"[" * 100_000) is None


def test_payload_whose_length_differs_from_the_descriptor_is_skipped() -> None:
    payload = build_payload(REF, IMG, signature_type=COSIGN_TYPE)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    manifest = json.dumps({"layers": [_layer(digest, len(payload) - 1)]}).encode()
    assert discovery.cosign_signatures_for(manifest, {digest: payload}.get) == []


def test_signature_list_budget(tmp_path: Path) -> None:
    db = Database(open_engine(f"sqlite:///{tmp_path / 'm.db'}"))
    chunk = limits.MAX_LIST_CONTENT_BYTES // 2
    with db.write() as conn:
        insert_manifest(conn, IMG, NOW, media_type="m")
        assert limits.list_refusal(conn, IMG, "atomic", chunk) is None
        sigdb.add_signature(conn, f"{IMG}@one", "atomic", b"1" * chunk, NOW)
        sigdb.add_signature(conn, f"{IMG}@two", "atomic", b"2" * chunk, NOW)
        refusal = limits.list_refusal(conn, IMG, "atomic", 1)
        assert refusal is not None and "exceed" in refusal
        # Other types are not served by the extension list and have their own budget.
        assert limits.list_refusal(conn, IMG, "cosign", 1) is None
        sigdb.delete_all(conn, IMG)
        for i in range(limits.MAX_SIGNATURES_PER_IMAGE):
            sigdb.add_signature(conn, f"{IMG}@s{i}", "atomic", base64.b64encode(bytes([i])), NOW)
        refusal = limits.list_refusal(conn, IMG, "atomic", 1)
        assert refusal is not None and "limit" in refusal
    db.dispose()
