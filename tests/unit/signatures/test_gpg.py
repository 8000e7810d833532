"""OpenPGP signed-message verification through the real gpg binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageregistry.signatures.errors import SignatureVerificationError
from imageregistry.signatures.gpg import (
    export_keyring,
    key_ids_in,
    user_home,
    verify_signed_message,
)
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


def _tree(home: Path) -> dict[str, bytes | None]:
    """Every entry under `home`: file bytes, None for directories and sockets."""
    return {
        str(p.relative_to(home)): p.read_bytes() if p.is_file() else None
        for p in sorted(home.rglob("*"))
    }


def test_export_keyring_reads_a_users_home_without_touching_it(
    gpg_signer: GpgSigner, tmp_path: Path
) -> None:
    """The signer's own home (keybox, secret keys, trustdb) exports its public keys and is
    left exactly as it was; the exported keys verify that signer's messages."""
    before = _tree(gpg_signer.home)
    exported = export_keyring(gpg_signer.home)
    assert _tree(gpg_signer.home) == before
    assert {k.fingerprint for k in key_ids_in(exported)} >= {
        gpg_signer.fingerprint,
        gpg_signer.other_fingerprint,
    }
    assert verify_signed_message(gpg_signer.sign(PAYLOAD), [exported]).payload == PAYLOAD


def test_export_keyring_reads_a_legacy_pubring_gpg(gpg_signer: GpgSigner, tmp_path: Path) -> None:
    home = tmp_path / "legacy"
    home.mkdir(mode=0o700)
    (home / "pubring.gpg").write_bytes(gpg_signer.public_key())
    exported = export_keyring(home)
    assert [k.fingerprint for k in key_ids_in(exported)] == [gpg_signer.fingerprint]
    assert sorted(p.name for p in home.iterdir()) == ["pubring.gpg"]


def test_export_keyring_of_an_empty_or_missing_home_is_empty(tmp_path: Path) -> None:
    assert export_keyring(tmp_path) == b""
    assert export_keyring(tmp_path / "missing") == b""
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


def test_user_home_is_gnupghome_else_dot_gnupg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNUPGHOME", "/somewhere/keys")
    assert user_home() == Path("/somewhere/keys")
    monkeypatch.delenv("GNUPGHOME")
    monkeypatch.setenv("HOME", "/home/admin")
    assert user_home() == Path("/home/admin/.gnupg")
