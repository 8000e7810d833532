"""The secrets replicas share through the database: the serving CA and the cluster-admin
token are created by the first start and adopted by every other data dir (or taken over
from an older single server's data dir), and `rotate` replaces each of them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imageregistry.auth.tokens import (
    InvalidToken,
    TokenSigner,
    generate_signing_key,
    hash_token,
    new_opaque_token,
)
from imageregistry.bootstrap import ADMIN_GROUPS, ADMIN_USER, ensure_admin_kubeconfig, shared_ca
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tokens import (
    PREVIOUS_SIGNING_KEYS,
    SIGNING_KEY,
    TokenStore,
    get_or_create_secret,
    get_secret,
    split_pem,
)
from imageregistry.pki import ensure_tls
from imageregistry.rotation import rotate

URL = "https://127.0.0.1:5000"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(open_engine(f"sqlite:///{tmp_path / 'shared.db'}"))
    try:
        yield database
    finally:
        database.dispose()


def _start(db: Database, data_dir: Path) -> tuple[Path, dict[str, Any]]:
    """What `serve` prepares in a data dir: TLS from the shared CA, the admin kubeconfig."""
    tls = data_dir / "tls"
    files = ensure_tls(tls, ["127.0.0.1"], shared_ca(db, tls))
    ensure_admin_kubeconfig(db, data_dir, URL, files.ca_cert.read_bytes())
    return files.cert, yaml.safe_load((data_dir / "admin.kubeconfig").read_text())


def _token(config: dict[str, Any]) -> str:
    return str(config["users"][0]["user"]["token"])


def _ca(config: dict[str, Any]) -> x509.Certificate:
    data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    return x509.load_pem_x509_certificate(base64.b64decode(data))


def test_a_second_data_dir_adopts_the_ca_and_the_admin_token(db: Database, tmp_path: Path) -> None:
    cert_a, config_a = _start(db, tmp_path / "a")
    cert_b, config_b = _start(db, tmp_path / "b")
    assert _token(config_a) == _token(config_b)
    assert TokenStore(db).lookup_token(hash_token(_token(config_a))) == (
        ADMIN_USER,
        ADMIN_GROUPS,
        None,
    )
    # Each replica has a certificate of its own, and either kubeconfig's CA verifies both.
    assert cert_a.read_bytes() != cert_b.read_bytes()
    for cert in (cert_a, cert_b):
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        leaf.verify_directly_issued_by(_ca(config_a))
        leaf.verify_directly_issued_by(_ca(config_b))
    # The CA's private key is kept in the database, not in the data dirs.
    assert not (tmp_path / "a" / "tls" / "ca.key").exists()


def test_an_older_single_servers_ca_and_token_become_the_shared_ones(
    db: Database, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    files = ensure_tls(old / "tls", ["127.0.0.1"])  # the CA kept in the data dir
    token = new_opaque_token()
    TokenStore(db).add(hash_token(token), ADMIN_USER, ADMIN_GROUPS)
    (old / "admin.kubeconfig").write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "imageregistry",
                        "cluster": {
                            "server": URL,
                            "certificate-authority-data": base64.b64encode(
                                files.ca_cert.read_bytes()
                            ).decode(),
                        },
                    }
                ],
                "users": [{"name": ADMIN_USER, "user": {"token": token}}],
                "contexts": [],
            }
        )
    )
    ca_before = files.ca_cert.read_bytes()
    leaf_before = files.cert.read_bytes()
    _, kept = _start(db, old)
    assert _token(kept) == token
    assert (old / "tls" / "ca.crt").read_bytes() == ca_before
    assert (old / "tls" / "serving.crt").read_bytes() == leaf_before  # nothing re-issued
    _, new = _start(db, tmp_path / "new")
    assert _token(new) == token
    assert _ca(new).public_bytes(serialization.Encoding.PEM) == ca_before


def test_rotating_the_admin_token_refuses_the_old_one_and_updates_kubeconfigs(
    db: Database, tmp_path: Path
) -> None:
    _, before = _start(db, tmp_path / "a")
    path = tmp_path / "a" / "admin.kubeconfig"
    config = yaml.safe_load(path.read_text())
    config["contexts"].append({"name": "alice", "context": {"cluster": "elsewhere"}})
    path.write_text(yaml.safe_dump(config))
    older = new_opaque_token()  # one an older version made for another replica
    TokenStore(db).add(hash_token(older), ADMIN_USER, ADMIN_GROUPS)
    rotate(db, "admin-token")
    assert TokenStore(db).lookup_token(hash_token(_token(before))) is None
    assert TokenStore(db).lookup_token(hash_token(older)) is None
    _, after = _start(db, tmp_path / "a")
    assert _token(after) != _token(before)
    assert TokenStore(db).lookup_token(hash_token(_token(after))) == (
        ADMIN_USER,
        ADMIN_GROUPS,
        None,
    )
    assert [c["name"] for c in after["contexts"]] == ["admin", "alice"]  # the rest is kept


def test_rotating_the_serving_ca_reissues_certificates_and_kubeconfig_ca(
    db: Database, tmp_path: Path
) -> None:
    cert, before = _start(db, tmp_path / "a")
    rotate(db, "serving-ca")
    cert, after = _start(db, tmp_path / "a")
    assert _ca(after) != _ca(before)
    x509.load_pem_x509_certificate(cert.read_bytes()).verify_directly_issued_by(_ca(after))
    assert (tmp_path / "a" / "tls" / "ca.crt").read_bytes() == _ca(after).public_bytes(
        serialization.Encoding.PEM
    )


def _signer(db: Database) -> TokenSigner:
    """As `server.build_services` builds it."""
    key = get_or_create_secret(db, SIGNING_KEY, lambda: generate_signing_key().decode())
    return TokenSigner(
        key.encode(),
        previous_public_keys_pem=split_pem(get_secret(db, PREVIOUS_SIGNING_KEYS) or ""),
    )


def test_rotating_the_signing_key_keeps_old_tokens_until_revoked(db: Database) -> None:
    old_token, _ = _signer(db).issue("alice")
    rotate(db, "token-signing-key")
    rotated = _signer(db)
    assert rotated.verify(old_token).subject == "alice"  # issued before: still accepted
    new_token, _ = rotated.issue("bob")
    rotate(db, "token-signing-key", revoke_old=True)
    revoked = _signer(db)
    for token in (old_token, new_token):
        with pytest.raises(InvalidToken):
            revoked.verify(token)
