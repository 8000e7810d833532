"""Bearer tokens: signed JWTs for service accounts and users, and opaque random tokens.

JWTs are ES256 (P-256 key from `cryptography`, signed and checked with PyJWT) and carry
`iss`, `sub` (the username), `aud`, `iat`, `nbf`, `exp`, `jti`, the user's groups and, for
service accounts, a `kubernetes.io` claim (namespace, service account name and uid) shaped
like kube-apiserver's TokenRequest tokens so the authenticator can refuse a
token whose service account was deleted and re-created. `kubectl create token` sends no
audience, so tokens default to `DEFAULT_AUDIENCE`; like Kubernetes, a token whose audiences
do not include ours is not accepted by our API. Opaque tokens (admin/login) are random
strings of which the server stores only the SHA-256, compared in constant time. Refresh
tokens of the registry token endpoint are random strings of the same kind with a prefix
of their own, so they are told apart (and found in a leak scan) without a lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.clock import Clock, system_clock

DEFAULT_AUDIENCE = "https://imageregistry.local"
DEFAULT_ISSUER = "https://imageregistry.local"
ALGORITHM = "ES256"
KUBERNETES_CLAIM = "kubernetes.io"
OPAQUE_PREFIX = "ir_"
REFRESH_PREFIX = "irr_"


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired, not yet valid or for another audience."""


def generate_signing_key() -> bytes:
    """A new P-256 private key as unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class ServiceAccountRef:
    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True)
class TokenClaims:
    """A verified token's claims; `raw` keeps every claim for anything not modelled here."""

    subject: str
    groups: tuple[str, ...]
    audiences: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    token_id: str
    service_account: ServiceAccountRef | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def get(self, key: str, default: Any = None) -> Any:
        """Any claim by its JWT name, including `extra_claims` given to `issue`."""
        return self.raw.get(key, default)


def _kubernetes_claim(sa: ServiceAccountRef) -> dict[str, Any]:
    return {"namespace": sa.namespace, "serviceaccount": {"name": sa.name, "uid": sa.uid}}


def _timestamp(claims: Mapping[str, Any], key: str) -> datetime:
    value = claims.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"claim {key!r} missing or not a number")
    return datetime.fromtimestamp(value, UTC)


def _parse_kubernetes_claim(
    claims: Mapping[str, Any],
) -> ServiceAccountRef | None:
    kube = claims.get(KUBERNETES_CLAIM)
    if not isinstance(kube, Mapping):
        return None
    sa = kube.get("serviceaccount")
    namespace = kube.get("namespace")
    if not isinstance(sa, Mapping) or not isinstance(namespace, str):
        raise InvalidToken("malformed kubernetes.io claim")
    return ServiceAccountRef(namespace, str(sa.get("name", "")), str(sa.get("uid", "")))


class TokenSigner:
    """Issues and verifies JWTs with one ES256 key; older public keys may still verify."""

    def __init__(
        self,
        private_key_pem: bytes,
        *,
        issuer: str = DEFAULT_ISSUER,
        previous_public_keys_pem: Sequence[bytes] = (),
        clock: Clock = system_clock,
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the token signing key must be an EC P-256 private key")
        self._key = key
        self._verify_keys = [key.public_key()]
        for pem in previous_public_keys_pem:
            public = serialization.load_pem_public_key(pem)
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise ValueError("previous token keys must be EC public keys")
            self._verify_keys.append(public)
        self._issuer = issuer
        self._clock = clock

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def issue(
        self,
        subject_username: str,
        groups: Iterable[str] = (),
        audiences: Sequence[str] = (),
        expires_in_seconds: int = 3600,
        *,
        service_account: ServiceAccountRef | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> tuple[str, datetime]:
        """Sign a token; empty `audiences` means `[DEFAULT_AUDIENCE]`. Returns (token, expiry)."""
        if expires_in_seconds <= 0:
            raise ValueError("expires_in_seconds must be positive")
        now = self._clock().replace(microsecond=0)
        expiry = now + timedelta(seconds=expires_in_seconds)
        claims: dict[str, Any] = dict(extra_claims or {})
        claims.update(
            iss=self._issuer,
            sub=subject_username,
            aud=list(audiences) or [DEFAULT_AUDIENCE],
            iat=int(now.timestamp()),
            nbf=int(now.timestamp()),
            exp=int(expiry.timestamp()),
            jti=str(uuid.uuid4()),
            groups=list(dict.fromkeys(groups)),
        )
        if service_account is not None:
            claims[KUBERNETES_CLAIM] = _kubernetes_claim(service_account)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expiry

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        last_error: Exception = InvalidToken("no verification key")
        for key in self._verify_keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=audience,
                    issuer=self._issuer,
                    # Time claims are checked in verify() against the injectable clock.
                    options={
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                        "require": ["exp", "iat", "sub", "aud", "iss"],
                    },
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                last_error = exc
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from exc
        raise InvalidToken(str(last_error))

    def verify(self, token: str, audience: str = DEFAULT_AUDIENCE) -> TokenClaims:
        claims = self._decode(token, audience)
        now = self._clock()
        expires_at = _timestamp(claims, "exp")
        if now >= expires_at:
            raise InvalidToken("token has expired")
        if "nbf" in claims and now < _timestamp(claims, "nbf"):
            raise InvalidToken("token is not yet valid")
        groups = claims.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidToken("claim 'groups' must be a list of strings")
        aud = claims["aud"]
        sa = _parse_kubernetes_claim(claims)
        return TokenClaims(
            subject=str(claims["sub"]),
            groups=tuple(groups),
            audiences=tuple(aud) if isinstance(aud, list) else (str(aud),),
            issued_at=_timestamp(claims, "iat"),
            expires_at=expires_at,
            token_id=str(claims.get("jti", "")),
            service_account=sa,
            raw=MappingProxyType(claims),
        )


def looks_like_jwt(token: str) -> bool:
    """Cheap routing between the JWT and opaque-token authenticators."""
    return token.count(".") == 2 and not token.startswith(OPAQUE_PREFIX)


def new_opaque_token() -> str:
    """256 random bits, URL-safe; the prefix makes leaked tokens easy to scan for."""
    return OPAQUE_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    """A refresh token for the registry token endpoint: 256 random bits, URL-safe."""
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def is_refresh_token(token: str) -> bool:
    return token.startswith(REFRESH_PREFIX)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
