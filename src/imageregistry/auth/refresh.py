"""Refresh tokens of the registry token endpoint (OAuth2 `access_type=offline`).

A client that asks for offline access (containerd and the Docker daemon do when they log in)
gets a refresh token besides the access token, and later trades it for new access tokens
with `grant_type=refresh_token` instead of sending the password again. A refresh token is a
random string (`irr_...`) of which only the SHA-256 is stored; it is accepted by the token
endpoint alone, never as a Bearer credential on other requests.

A refresh token never outlives what it was made from, so revoking that revokes it:
- from an htpasswd password: the user must still be in the file at every refresh;
- from a token: it expires with that token, and a service-account identity must still
  exist (same uid) at every refresh, like the service-account token itself;
- in any case it expires `refresh_token_ttl_seconds` after it was issued.
Access tokens issued from it are JWTs carrying the same revocation ties (`idp: htpasswd`,
the `kubernetes.io` service-account claim) and never live past the refresh token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from imageregistry.auth.authn import (
    IDP_CLAIM,
    IDP_HTPASSWD,
    PasswordChecker,
    ServiceAccountChecker,
    TokenLookup,
    Unauthenticated,
)
from imageregistry.auth.identity import (
    GROUP_AUTHENTICATED,
    UserInfo,
    authenticated,
    parse_service_account,
)
from imageregistry.auth.tokens import (
    InvalidToken,
    ServiceAccountRef,
    TokenSigner,
    hash_token,
    looks_like_jwt,
    new_refresh_token,
)
from imageregistry.clock import Clock
from imageregistry.metadata.tokens import RefreshRecord, RefreshTokenStore

# distribution's token spec: a token is never handed out with less than 60 s to live.
MIN_ACCESS_SECONDS = 60


@dataclass(frozen=True)
class Refreshed:
    """A redeemed refresh token: who it stands for and its stored record."""

    user: UserInfo
    record: RefreshRecord


class RefreshTokens:
    def __init__(
        self,
        store: RefreshTokenStore,
        signer: TokenSigner,
        audience: str,
        *,
        tokens: TokenLookup,
        passwords: PasswordChecker | None,
        service_accounts: ServiceAccountChecker | None,
        ttl_seconds: int,
        clock: Clock,
    ) -> None:
        self._store = store
        self._signer = signer
        self._audience = audience
        self._tokens = tokens
        self._passwords = passwords
        self._service_accounts = service_accounts
        self._ttl = timedelta(seconds=max(MIN_ACCESS_SECONDS, ttl_seconds))
        self._clock = clock

    def issue(self, user: UserInfo, credential: str | None, client_id: str) -> str:
        """A new refresh token for `user`, who authenticated with the token `credential`
        (None: with an htpasswd password)."""
        now = self._clock()
        expires = now + self._ttl
        idp = IDP_HTPASSWD if credential is None else ""
        account: ServiceAccountRef | None = None
        if credential is not None and looks_like_jwt(credential):
            try:
                claims = self._signer.verify(credential, self._audience)
            except InvalidToken as exc:
                raise Unauthenticated(str(exc)) from None
            expires = min(expires, claims.expires_at)
            account = claims.service_account
            idp = str(claims.get(IDP_CLAIM) or "")
        elif credential is not None:
            found = self._tokens.lookup_token(hash_token(credential))
            if found is None:
                raise Unauthenticated("invalid or expired token")
            if found[2] is not None:
                expires = min(expires, found[2])
        if account is None:
            named = parse_service_account(user.username)
            account = ServiceAccountRef(*named) if named else None
        token = new_refresh_token()
        self._store.add(
            hash_token(token),
            RefreshRecord(
                username=user.username,
                groups=tuple(g for g in user.groups if g != GROUP_AUTHENTICATED),
                expires=expires,
                idp=idp,
                sa_namespace=account.namespace if account else "",
                sa_name=account.name if account else "",
                sa_uid=account.uid if account else "",
                client_id=client_id,
            ),
        )
        return token

    def redeem(self, token: str) -> Refreshed:
        """The identity behind a live refresh token, or `Unauthenticated`."""
        record = self._store.lookup(hash_token(token))
        if record is None:
            raise Unauthenticated("invalid, expired or revoked refresh token")
        if record.idp == IDP_HTPASSWD and (
            self._passwords is None or not self._passwords.has_user(record.username)
        ):
            raise Unauthenticated(f"user {record.username} is no longer in the htpasswd file")
        if record.sa_name and (
            self._service_accounts is None
            or not self._service_accounts.service_account_exists(
                record.sa_namespace, record.sa_name, record.sa_uid
            )
        ):
            raise Unauthenticated(
                f"service account {record.sa_namespace}/{record.sa_name} no longer exists"
            )
        return Refreshed(authenticated(record.username, record.groups), record)

    def access_token(self, refreshed: Refreshed, ttl_seconds: int) -> tuple[str, int]:
        """A JWT for a redeemed refresh token, living at most as long as the refresh token;
        returns (token, lifetime in seconds)."""
        record = refreshed.record
        left = int((record.expires - self._clock()).total_seconds())
        lifetime = min(max(MIN_ACCESS_SECONDS, ttl_seconds), left)
        if lifetime < MIN_ACCESS_SECONDS:
            raise Unauthenticated("refresh token is about to expire")
        account = (
            ServiceAccountRef(record.sa_namespace, record.sa_name, record.sa_uid)
            if record.sa_name
            else None
        )
        token, _expiry = self._signer.issue(
            record.username,
            groups=record.groups,
            audiences=[self._audience],
            expires_in_seconds=lifetime,
            service_account=account,
            extra_claims={IDP_CLAIM: record.idp} if record.idp else None,
        )
        return token, lifetime
