"""OpenPGP signed-message verification through the real gpg binary."""

from __future__ import annotations

import pytest

from imageregistry.signatures.errors import SignatureVerificationError
from imageregistry.signatures.gpg import key_ids_in, verify_signed_message
from tests.unit.signatures.conftest import GpgSigner

PAYLOAD = b'{"hello":"world"}'


def test_good_signature_returns_payload_and_signer(gpg_signer: GpgSigner) -> None:
    message = gpg_signer.sign(PAYLOAD)
    result = verify_signed_message(message, [gpg_signer.public_key()])
    assert result.payload == PAYLOAD
    assert result.fingerprint == gpg_signer.fingerprint
    assert result.key_id == gpg_signer.fingerprint[-16:]
    assert result.signer_uid == "Test <t@example.com>"


def test_armored_keys_work_too(gpg_signer: GpgSigner) -> None:
    message = gpg_signer.sign(PAYLOAD)
    result = verify_signed_message(message, [gpg_signer.public_key(armor=True)])
    assert result.payload == PAYLOAD


def test_unknown_key_is_named(gpg_signer: GpgSigner) -> None:
    message = gpg_signer.sign(PAYLOAD, key=gpg_signer.other_fingerprint)
    expected = f"signed by key {gpg_signer.other_fingerprint[-16:]} which is not in the trusted"
    with pytest.raises(SignatureVerificationError, match=expected):
        verify_signed_message(message, [gpg_signer.public_key()])


def test_tampered_message_is_a_bad_signature(gpg_signer: GpgSigner) -> None:
    message = gpg_signer.sign(PAYLOAD)
    tampered = message.replace(b"world", b"w0rld")
    assert tampered != message
    with pytest.raises(SignatureVerificationError, match="bad signature"):
        verify_signed_message(tampered, [gpg_signer.public_key()])


def test_plain_bytes_are_not_a_signed_message(gpg_signer: GpgSigner) -> None:
    with pytest.raises(SignatureVerificationError, match="not an OpenPGP signed message"):
        verify_signed_message(PAYLOAD, [gpg_signer.public_key()])


def test_expired_key_is_reported(gpg_signer: GpgSigner) -> None:
    key = gpg_signer.expired_fingerprint
    message = gpg_signer.sign(PAYLOAD, key=key, faked_time="20200101T060000")
    with pytest.raises(SignatureVerificationError, match="expired"):
        verify_signed_message(message, [gpg_signer.public_key(key)])


def test_garbage_key_file_is_refused(gpg_signer: GpgSigner) -> None:
    message = gpg_signer.sign(PAYLOAD)
    with pytest.raises(SignatureVerificationError, match="no usable OpenPGP public key"):
        verify_signed_message(message, [b"not a key"])


def test_key_ids_in_lists_primary_keys(gpg_signer: GpgSigner) -> None:
    both = gpg_signer.public_key() + gpg_signer.public_key(gpg_signer.other_fingerprint)
    keys = key_ids_in(both)
    assert [k.fingerprint for k in keys] == [
        gpg_signer.fingerprint,
        gpg_signer.other_fingerprint,
    ]
    assert keys[0].key_id == gpg_signer.fingerprint[-16:]
    assert keys[0].uids == ("Test <t@example.com>",)
