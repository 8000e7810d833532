from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from imageregistry.auth.tokens import (
    DEFAULT_AUDIENCE,
    InvalidToken,
    ServiceAccountRef,
    TokenSigner,
    generate_signing_key,
    hash_token,
    looks_like_jwt,
    new_opaque_token,
)

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def key() -> bytes:
    return generate_signing_key()


def signer(key: bytes, clock: Clock) -> TokenSigner:
    return TokenSigner(key, clock=clock)


def test_issue_and_verify_service_account_token(key: bytes) -> None:
    clock = Clock()
    s = signer(key, clock)
    token, expiry = s.issue(
        "system:serviceaccount:app:builder",
        ["system:serviceaccounts"],
        expires_in_seconds=600,
        service_account=ServiceAccountRef("app", "builder", "uid-1"),
        extra_claims={"sa_namespace": "app"},
    )
    assert expiry == T0 + timedelta(seconds=600)
    assert looks_like_jwt(token)
    claims = s.verify(token)
    assert claims.subject == "system:serviceaccount:app:builder"
    assert claims.groups == ("system:serviceaccounts",)
    assert claims.audiences == (DEFAULT_AUDIENCE,)
    assert claims.expires_at == expiry
    assert claims.service_account == ServiceAccountRef("app", "builder", "uid-1")
    assert claims.get("sa_namespace") == "app"


def test_expired_token_is_rejected(key: bytes) -> None:
    clock = Clock()
    s = signer(key, clock)
    token, _ = s.issue("alice", expires_in_seconds=60)
    clock.now = T0 + timedelta(seconds=59)
    assert s.verify(token).subject == "alice"
    clock.now = T0 + timedelta(seconds=60)
    with pytest.raises(InvalidToken, match="expired"):
        s.verify(token)


def test_not_yet_valid_token_is_rejected(key: bytes) -> None:
    clock = Clock()
    token, _ = signer(key, clock).issue("alice")
    clock.now = T0 - timedelta(seconds=5)
    with pytest.raises(InvalidToken):
        signer(key, clock).verify(token)


def test_custom_audience_without_ours_is_unusable(key: bytes) -> None:
    s = signer(key, Clock())
    token, _ = s.issue("alice", audiences=["vault"])
    with pytest.raises(InvalidToken):
        s.verify(token)
    assert s.verify(token, "vault").audiences == ("vault",)
    both, _ = s.issue("alice", audiences=["vault", DEFAULT_AUDIENCE])
    assert s.verify(both).subject == "alice"


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "system:admin"
    claims["groups"] = ["system:masters"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


def test_tampered_token_is_rejected(key: bytes) -> None:
    s = signer(key, Clock())
    token, _ = s.issue("alice")
    with pytest.raises(InvalidToken):
        s.verify(_tamper(token))


def test_token_from_another_key_is_rejected_unless_trusted(key: bytes) -> None:
    clock = Clock()
    old = signer(generate_signing_key(), clock)
    token, _ = old.issue("alice")
    with pytest.raises(InvalidToken):
        signer(key, clock).verify(token)
    rotated = TokenSigner(key, previous_public_keys_pem=[old.public_key_pem()], clock=clock)
    assert rotated.verify(token).subject == "alice"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 50])
def test_malformed_tokens(key: bytes, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        signer(key, Clock()).verify(garbage)


def test_alg_none_is_rejected(key: bytes) -> None:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    exp = int((T0 + timedelta(hours=1)).timestamp())
    claims = {"sub": "root", "aud": [DEFAULT_AUDIENCE], "iss": DEFAULT_AUDIENCE, "exp": exp}
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'iat': exp - 10})}."
    with pytest.raises(InvalidToken):
        signer(key, Clock()).verify(token)


def test_rejects_non_p256_keys() -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError):
        TokenSigner(rsa_pem)


def test_opaque_tokens_are_random_and_stored_hashed() -> None:
    a, b = new_opaque_token(), new_opaque_token()
    assert a != b and len(a) > 40
    assert not looks_like_jwt(a)
    stored = hash_token(a)
    assert len(stored) == 64 and a not in stored
    assert hash_token(a) == stored and hash_token(b) != stored
