"""End-to-end verification of stored signatures, trust records and their validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.signatures.cosign import encode_cosign_content, public_key_id, sign_cosign
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload
from imageregistry.signatures.verify import (
    SignatureOutcome,
    StoredSignature,
    TrustedKeys,
    drop_revoked_trust,
    trust_fields,
    trusted_conditions,
    validate_signature_object,
    verify_signature,
)
from tests.unit.signatures.conftest import GpgSigner

DIGEST = "sha256:" + "12" * 32
OTHER_DIGEST = "sha256:" + "34" * 32
REF = "127.0.0.1:5000/ns/demo:latest"
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def _atomic(gpg_signer: GpgSigner, payload: bytes, key: str | None = None) -> StoredSignature:
    return StoredSignature(f"{DIGEST}@abc", "atomic", gpg_signer.sign(payload, key=key))


@pytest.fixture(scope="module")
def keys(gpg_signer: GpgSigner) -> TrustedKeys:
    return TrustedKeys(gpg_keyrings=(gpg_signer.public_key(),))


def test_good_atomic_signature(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    sig = _atomic(gpg_signer, build_payload(REF, DIGEST, creator="skopeo", timestamp=5))
    outcome = verify_signature(DIGEST, sig, "127.0.0.1:5000/ns/demo", keys)
    assert outcome.ok, outcome.reason
    assert outcome.key_id == gpg_signer.fingerprint[-16:]
    assert outcome.signer == "Test <t@example.com>"
    assert "confirmed" in outcome.reason
    fields = trust_fields(outcome, "alice", NOW)
    assert fields["issuedBy"] == {"commonName": outcome.key_id}
    assert fields["imageIdentity"] == REF
    assert fields["signedClaims"]["creator"] == "skopeo"
    assert validate_signature_object(fields) == []


def test_wrong_key(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    sig = _atomic(gpg_signer, build_payload(REF, DIGEST), key=gpg_signer.other_fingerprint)
    outcome = verify_signature(DIGEST, sig, REF, keys)
    assert not outcome.ok
    assert "not in the trusted keyring" in outcome.reason
    assert outcome.payload is None


def test_tampered_bytes(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    sig = _atomic(gpg_signer, build_payload(REF, DIGEST))
    tampered = StoredSignature(sig.name, sig.type, sig.content.replace(b"demo", b"demx"))
    outcome = verify_signature(DIGEST, tampered, REF, keys)
    assert not outcome.ok
    assert "bad signature" in outcome.reason


def test_signature_for_another_digest(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    sig = _atomic(gpg_signer, build_payload(REF, OTHER_DIGEST))
    outcome = verify_signature(DIGEST, sig, REF, keys)
    assert not outcome.ok
    assert outcome.reason == f"signature is for {OTHER_DIGEST}, not for image {DIGEST}"


@pytest.mark.parametrize(
    "expected",
    [
        "127.0.0.1:5000/ns/other:latest",
        "127.0.0.1:5000/ns/demo:v2",
        "other.example.com/ns/demo:latest",
    ],
)
def test_identity_mismatch(gpg_signer: GpgSigner, keys: TrustedKeys, expected: str) -> None:
    outcome = verify_signature(
        DIGEST, _atomic(gpg_signer, build_payload(REF, DIGEST)), expected, keys
    )
    assert not outcome.ok
    assert outcome.reason.startswith("identity mismatch")


def test_digest_form_identity(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    sig = _atomic(gpg_signer, build_payload("127.0.0.1:5000/ns/demo:v9", DIGEST))
    assert verify_signature(DIGEST, sig, f"127.0.0.1:5000/ns/demo@{DIGEST}", keys).ok


def test_malformed_payload(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    outcome = verify_signature(DIGEST, _atomic(gpg_signer, b'{"critical":'), REF, keys)
    assert not outcome.ok
    assert "not valid JSON" in outcome.reason


def test_unknown_type_and_missing_keys(gpg_signer: GpgSigner) -> None:
    sig = _atomic(gpg_signer, build_payload(REF, DIGEST))
    assert "needs an OpenPGP public key" in verify_signature(DIGEST, sig, REF, TrustedKeys()).reason
    odd = StoredSignature("x", "notary", b"")
    assert "unsupported signature type" in verify_signature(DIGEST, odd, REF, TrustedKeys()).reason


def test_cosign_signature_verifies_with_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = build_payload("127.0.0.1:5000/ns/demo", DIGEST, signature_type=COSIGN_TYPE)
    sig = StoredSignature("c", "cosign", encode_cosign_content(payload, sign_cosign(payload, key)))
    outcome = verify_signature(DIGEST, sig, REF, TrustedKeys(pem_keys=(pem,)))
    assert outcome.ok, outcome.reason
    assert outcome.key_id == public_key_id(pem)
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert not verify_signature(DIGEST, sig, REF, TrustedKeys(pem_keys=(other,))).ok


def test_conditions_shape(gpg_signer: GpgSigner, keys: TrustedKeys) -> None:
    outcome = verify_signature(DIGEST, _atomic(gpg_signer, build_payload(REF, DIGEST)), REF, keys)
    trusted, for_image = trusted_conditions(outcome, "alice", NOW)
    assert (trusted["type"], trusted["status"], trusted["reason"]) == (
        "Trusted",
        "True",
        "manually verified",
    )
    assert "alice" in trusted["message"]
    assert trusted["lastProbeTime"] == "2024-05-06T07:08:09Z"
    assert (for_image["type"], for_image["status"]) == ("ForImage", "True")


def test_conditions_need_success() -> None:
    with pytest.raises(ValueError, match="successful"):
        trusted_conditions(SignatureOutcome("n", False, "bad"), "alice", NOW)


def _cond(kind: str, status: str = "True") -> dict[str, str]:
    return {"type": kind, "status": status}


@pytest.mark.parametrize(
    ("sig", "error"),
    [
        ({"conditions": [_cond("Trusted")]}, "Trusted and ForImage must be set together"),
        ({"conditions": [_cond("ForImage")]}, "Trusted and ForImage must be set together"),
        ({"conditions": [], "imageIdentity": "x"}, 'imageIdentity: Invalid value: "x": only'),
        ({"signedClaims": {"a": "b"}}, 'signedClaims: Invalid value: {"a": "b"}: only'),
        ({"issuedBy": {"commonName": "K"}}, 'issuedBy: Invalid value: {"commonName": "K"}'),
        (
            {"conditions": [_cond("Trusted", "False"), _cond("ForImage")], "imageIdentity": "x"},
            "must be empty unless the Trusted condition is True",
        ),
        ({"conditions": [_cond("Trusted"), _cond("ForImage", "Maybe")]}, "status: must be"),
        ({"conditions": [_cond("Trusted"), _cond("ForImage", "False")]}, "ForImage=True"),
    ],
)
def test_validation_errors(sig: dict[str, object], error: str) -> None:
    assert any(error in e for e in validate_signature_object(sig)), validate_signature_object(sig)


def test_validation_accepts_empty_and_cleared() -> None:
    assert validate_signature_object({}) == []
    assert validate_signature_object({"conditions": [], "issuedBy": {"commonName": ""}}) == []


SAVED = {
    "name": "sha256:abc@sig",
    "conditions": [_cond("Trusted"), _cond("ForImage")],
    "imageIdentity": "reg/ns/demo:latest",
    "signedClaims": {"docker-reference": "reg/ns/demo:latest"},
    "issuedBy": {"commonName": "K"},
}


def test_removing_trusted_drops_what_only_a_verification_set() -> None:
    edited = {**SAVED, "conditions": [_cond("ForImage")]}
    cleared = drop_revoked_trust(edited, SAVED)
    assert cleared["conditions"] == []
    assert all(cleared[k] is None for k in ("imageIdentity", "signedClaims", "issuedBy"))
    assert validate_signature_object(cleared) == []


def test_trusted_false_keeps_for_image_and_clears_derived_fields() -> None:
    edited = {**SAVED, "conditions": [_cond("Trusted", "False"), _cond("ForImage")]}
    cleared = drop_revoked_trust(edited, SAVED)
    assert cleared["conditions"] == edited["conditions"]
    assert validate_signature_object(cleared) == []


@pytest.mark.parametrize(
    ("edited", "stored"),
    [
        # still trusted: nothing to drop
        ({**SAVED, "imageIdentity": "other"}, SAVED),
        # was not trusted: an identity claimed now is not a leftover
        ({**SAVED, "conditions": []}, {**SAVED, "conditions": []}),
        # trust removed but the identity changed in the same edit: kept, so refused
        ({**SAVED, "conditions": [], "imageIdentity": "someone/else"}, SAVED),
    ],
)
def test_edits_that_are_not_a_plain_revocation_keep_their_values(
    edited: dict[str, object], stored: dict[str, object]
) -> None:
    result = drop_revoked_trust(edited, stored)
    assert result["imageIdentity"] == edited["imageIdentity"]
