"""Authentication: turn an `Authorization` header into a `UserInfo`.

Accepted credentials (behaviour.md §3):
- `Bearer <token>` where the token is an opaque token issued by this server (stored only
  as a SHA-256 hash) or a JWT signed by this server (service-account tokens from the
  TokenRequest API, and tokens handed out by the registry token endpoint);
- `Basic` whose password is such a token (the username is ignored), so
  `docker login -u any -p $(ac whoami -t)` works;
- `Basic` with an htpasswd user's real password. bcrypt is slow by design, so successful
  checks are remembered briefly (keyed by a hash of the credentials) and the registry
  answers with a Bearer challenge so clients trade the password for a token once.
No header means the anonymous user; malformed or wrong credentials raise `Unauthenticated`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from imageregistry.auth.identity import UserInfo, anonymous, authenticated
from imageregistry.auth.tokens import InvalidToken, TokenSigner, hash_token, looks_like_jwt


class Unauthenticated(Exception):
    """Credentials were presented but are not valid."""


class OpaqueTokenLookup(Protocol):
    def lookup_token(self, token_sha256: str) -> tuple[str, tuple[str, ...]] | None:
        """Username and groups for a stored token hash, or None (unknown/expired)."""


class PasswordChecker(Protocol):
    def verify(self, username: str, password: str) -> bool: ...


class ServiceAccountChecker(Protocol):
    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        """True if the account exists (and, when `uid` is given, is the same object)."""


_PASSWORD_CACHE_SECONDS = 60.0
_PASSWORD_CACHE_SIZE = 1024


class Authenticator:
    def __init__(
        self,
        tokens: OpaqueTokenLookup,
        signer: TokenSigner,
        audience: str,
        passwords: PasswordChecker | None = None,
        service_accounts: ServiceAccountChecker | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._signer = signer
        self._audience = audience
        self._passwords = passwords
        self._service_accounts = service_accounts
        self._monotonic = monotonic
        self._password_ok: OrderedDict[str, float] = OrderedDict()

    @property
    def signer(self) -> TokenSigner:
        return self._signer

    def authenticate(self, authorization: str | None) -> UserInfo:
        if not authorization:
            return anonymous()
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self.authenticate_token(value)
        if scheme.lower() == "basic" and value:
            return self._basic(value)
        raise Unauthenticated("unsupported authorization scheme")

    def authenticate_token(self, token: str) -> UserInfo:
        if looks_like_jwt(token):
            return self._jwt(token)
        found = self._tokens.lookup_token(hash_token(token))
        if found is None:
            raise Unauthenticated("invalid or expired token")
        username, groups = found
        return authenticated(username, groups)

    def _jwt(self, token: str) -> UserInfo:
        try:
            claims = self._signer.verify(token, self._audience)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc)) from None
        sa = claims.service_account
        if (
            sa is not None
            and self._service_accounts is not None
            and not self._service_accounts.service_account_exists(sa.namespace, sa.name, sa.uid)
        ):
            raise Unauthenticated(f"service account {sa.namespace}/{sa.name} no longer exists")
        return authenticated(claims.subject, claims.groups)

    def _basic(self, value: str) -> UserInfo:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep or not password:
            raise Unauthenticated("malformed basic credentials")
        if self._passwords is not None and self._check_password(username, password):
            return authenticated(username, ())
        return self.authenticate_token(password)

    def _check_password(self, username: str, password: str) -> bool:
        assert self._passwords is not None
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        now = self._monotonic()
        seen = self._password_ok.get(key)
        if seen is not None and now - seen < _PASSWORD_CACHE_SECONDS:
            return True
        if not self._passwords.verify(username, password):
            return False
        self._password_ok[key] = now
        self._password_ok.move_to_end(key)
        while len(self._password_ok) > _PASSWORD_CACHE_SIZE:
            self._password_ok.popitem(last=False)
        return True

    def issue_token(self, user: UserInfo, ttl_seconds: int) -> tuple[str, datetime]:
        """A JWT standing for `user` (the registry token endpoint hands these out)."""
        groups = [g for g in user.groups if g != "system:authenticated"]
        return self._signer.issue(
            user.username, groups=groups, audiences=[self._audience], expires_in_seconds=ttl_seconds
        )
