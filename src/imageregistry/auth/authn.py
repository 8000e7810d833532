"""Authentication: turn an `Authorization` header into a `UserInfo`.

Accepted credentials (docs/behaviour.md#access-control):
- `Bearer <token>` where the token is an opaque token issued by this server (stored only
  as a SHA-256 hash) or a JWT signed by this server (service-account tokens from the
  TokenRequest API, and tokens handed out by the registry token endpoint);
- `Basic` whose password is such a token (the username is ignored), so
  `docker login -u any -p $(ac whoami -t)` works;
- `Basic` with an htpasswd user's real password. bcrypt is slow by design, so successful
  checks are remembered briefly (keyed by a hash of the credentials) and the registry
  answers with a Bearer challenge so clients trade the password for a token once. Such a
  token carries `idp: htpasswd` and, like a remembered password check, stops working as
  soon as its user is no longer in the (re-read) file. Failed checks are throttled per
  source address and per username (`throttle.py`): beyond the budget the check is refused
  with `TooManyFailedLogins` before bcrypt runs.
A Basic password is tried as a token before bcrypt runs, so a client that sends its token
with Basic (docker, podman and containerd do after `login -p $(ac whoami -t)`) pays what a
Bearer client pays; `cached` answers both from memory.
No header means the anonymous user; malformed or wrong credentials raise `Unauthenticated`.

Successful token authentications (opaque tokens and verified JWTs, including the
service-account existence check) are remembered per process for `AUTH_CACHE_SECONDS`
(5 s), keyed by the token's SHA-256 and never past the token's own expiry, in a bounded
LRU of `AUTH_CACHE_SIZE` entries: the registry data plane authenticates the same token on
every request, and a database round trip (or an ES256 verification) each time would cost
more than the rest of a manifest GET. Deleting a service account or a namespace through
the API empties the cache of the process that served the deletion
(`forget_cached_identities`) and bumps the data dir's identity epoch (`epoch.py`), which
the other workers check with one `stat` before using their caches, so a deleted account's
token stops working at once on every worker of the server; other replicas may still
accept it for at most those 5 s if it was used there in the last 5 s. A re-read htpasswd
file (`PasswordChecker.generation`) empties the cache too, so a removed user's tokens stop
with the re-read. Failures are never cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imageregistry.auth.epoch import IdentityEpoch
from imageregistry.auth.identity import UserInfo, anonymous, authenticated, parse_service_account
from imageregistry.auth.throttle import LoginThrottle
from imageregistry.auth.tokens import (
    InvalidToken,
    ServiceAccountRef,
    TokenSigner,
    hash_token,
    looks_like_jwt,
)
from imageregistry.clock import Clock, system_clock


class Unauthenticated(Exception):
    """Credentials were presented but are not valid."""


class TooManyFailedLogins(Unauthenticated):
    """Password checks for this source or user are suspended for `retry_after` seconds.

    A subclass, so a caller that does not tell it apart still refuses the request (401)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed password checks; try again in {retry_after} s "
            "(tokens are not affected)"
        )
        self.retry_after = retry_after


# Username, groups and expiry (None: never expires) of a stored opaque token.
StoredToken = tuple[str, tuple[str, ...], datetime | None]


class TokenLookup(Protocol):
    def lookup_token(self, token_sha256: str) -> StoredToken | None:
        """The live token stored under this hash, or None (unknown or expired). The expiry
        bounds how long an authentication from it may be remembered."""


class PasswordChecker(Protocol):
    def verify(self, username: str, password: str) -> bool: ...

    def has_user(self, username: str) -> bool: ...

    def generation(self) -> int:
        """A number that changes whenever the set of users may have changed."""


class ServiceAccountChecker(Protocol):
    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        """True if the account exists (and, when `uid` is given, is the same object)."""


_PASSWORD_CACHE_SECONDS = 60.0
_PASSWORD_CACHE_SIZE = 1024
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_SIZE = 4096


# A token the registry token endpoint issued for an htpasswd login says so; it stops
# working when its user leaves the file.
IDP_CLAIM, IDP_HTPASSWD = "idp", "htpasswd"


class AuthCache:
    """Bounded LRU: token hash → (user, monotonic deadline, wall-clock expiry or None)."""

    def __init__(
        self,
        ttl: float,
        size: int,
        monotonic: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._monotonic = monotonic
        self._clock = clock
        self._entries: OrderedDict[str, tuple[UserInfo, float, datetime | None]] = OrderedDict()

    def get(self, key: str) -> UserInfo | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        user, deadline, expires = entry
        if self._monotonic() >= deadline or (expires is not None and self._clock() >= expires):
            self._entries.pop(key, None)
            return None
        return user

    def clear(self) -> None:
        self._entries.clear()

    def put(self, key: str, user: UserInfo, expires: datetime | None) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (user, self._monotonic() + self.ttl, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Authenticator:
    def __init__(
        self,
        tokens: TokenLookup,
        signer: TokenSigner,
        audience: str,
        passwords: PasswordChecker | None = None,
        service_accounts: ServiceAccountChecker | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock = system_clock,
        cache_seconds: float = AUTH_CACHE_SECONDS,
        epoch: IdentityEpoch | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._tokens = tokens
        self._throttle = throttle
        self._epoch = epoch
        self._signer = signer
        self._audience = audience
        self._passwords = passwords
        self._password_generation = passwords.generation() if passwords is not None else 0
        self._service_accounts = service_accounts
        self._cache = AuthCache(cache_seconds, AUTH_CACHE_SIZE, monotonic, clock)
        # bcrypt is slow by design: a verified password is remembered a little longer.
        self._password_ok = AuthCache(
            _PASSWORD_CACHE_SECONDS, _PASSWORD_CACHE_SIZE, monotonic, clock
        )

    @property
    def signer(self) -> TokenSigner:
        return self._signer

    @property
    def audience(self) -> str:
        return self._audience

    def forget_cached_identities(self) -> None:
        """Drop every remembered authentication (an identity was just deleted), here and,
        through the epoch file, in the other workers of this data dir."""
        self._cache.clear()
        if self._epoch is not None:
            self._epoch.bump()

    def _remembered(self, key: str) -> UserInfo | None:
        """A cached authentication, unless an identity may have gone since it was made: an
        account deleted by any worker (the epoch) or a changed htpasswd file."""
        stale = self._epoch is not None and self._epoch.changed()
        if self._passwords is not None:
            generation = self._passwords.generation()
            stale = stale or generation != self._password_generation
            self._password_generation = generation
        if stale:
            self._cache.clear()
        return self._cache.get(key)

    def authenticate(self, authorization: str | None, *, source: str | None = None) -> UserInfo:
        """The caller; `source` (the client's address) keys the failed-password throttle."""
        presented = credentials(authorization)
        if presented is None:
            return anonymous()
        if presented.username is None:
            return self.authenticate_token(presented.secret)
        return self._basic(presented.username, presented.secret, source)

    def cached(self, authorization: str | None) -> UserInfo | None:
        """The user for this header if that needs no I/O (no header, a Bearer token in the
        cache, or Basic credentials that are a remembered password check or a cached
        token); None when `authenticate` would have to do real work."""
        try:
            presented = credentials(authorization)
        except Unauthenticated:
            return None  # `authenticate` raises it
        if presented is None:
            return anonymous()
        if presented.username is None:
            return self._remembered(hash_token(presented.secret))
        password = self._remembered_password(presented.username, presented.secret)
        return password or self._remembered(hash_token(presented.secret))

    def authenticate_token(self, token: str) -> UserInfo:
        key = hash_token(token)
        user = self._remembered(key)
        if user is not None:
            return user
        user, expires = self._jwt(token) if looks_like_jwt(token) else self._opaque(key)
        self._cache.put(key, user, expires)
        return user

    def token_audiences(self, token: str) -> tuple[str, ...]:
        """The audiences a token that `authenticate_token` accepts was issued for (opaque
        tokens are only ever for this server)."""
        if not looks_like_jwt(token):
            return (self._audience,)
        try:
            return self._signer.verify(token, self._audience).audiences
        except InvalidToken as exc:
            raise Unauthenticated(str(exc)) from None

    def _opaque(self, key: str) -> tuple[UserInfo, datetime | None]:
        found = self._tokens.lookup_token(key)
        if found is None:
            raise Unauthenticated("invalid or expired token")
        username, groups, expires = found
        return authenticated(username, groups), expires

    def _jwt(self, token: str) -> tuple[UserInfo, datetime | None]:
        try:
            claims = self._signer.verify(token, self._audience)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc)) from None
        sa = claims.service_account
        named = parse_service_account(claims.subject)
        if sa is None and named is not None:
            # Defence in depth: a service-account identity without the kubernetes.io claim
            # is still checked against the account store, so it cannot outlive the account.
            sa = ServiceAccountRef(named[0], named[1])
        elif sa is not None and named != (sa.namespace, sa.name):
            raise Unauthenticated("token subject does not match its service account")
        if (
            sa is not None
            and self._service_accounts is not None
            and not self._service_accounts.service_account_exists(sa.namespace, sa.name, sa.uid)
        ):
            raise Unauthenticated(f"service account {sa.namespace}/{sa.name} no longer exists")
        if claims.get(IDP_CLAIM) == IDP_HTPASSWD and (
            self._passwords is None or not self._passwords.has_user(claims.subject)
        ):
            raise Unauthenticated(f"user {claims.subject} is no longer in the htpasswd file")
        # A service account's uid is its user's uid, as kube-apiserver's TokenReview says.
        uid = sa.uid if sa is not None else ""
        return authenticated(claims.subject, claims.groups, uid=uid), claims.expires_at

    def _remembered_password(self, username: str, password: str) -> UserInfo | None:
        if self._passwords is None:
            return None
        user = self._password_ok.get(_password_key(username, password))
        if user is not None and not self._passwords.has_user(username):
            return None  # removed from the file since: check again (and fail)
        return user

    def _basic(self, username: str, password: str, source: str | None) -> UserInfo:
        """A remembered password check, else the password as a token, else bcrypt.

        Trying the token first costs a hash lookup; trying bcrypt first would cost every
        token-as-password request a bcrypt whenever the token is not cached."""
        user = self._remembered_password(username, password)
        if user is not None:
            return user
        try:
            return self.authenticate_token(password)
        except Unauthenticated:
            if self._passwords is None:
                raise
        return self._check_password(self._passwords, username, password, source)

    def authenticate_password(
        self, username: str, password: str, *, source: str | None = None
    ) -> UserInfo:
        """An htpasswd login and nothing else: for a caller that has already tried the
        password as a token (the token endpoint's password grant)."""
        if self._passwords is None:
            raise Unauthenticated("invalid username or password")
        user = self._remembered_password(username, password)
        return user or self._check_password(self._passwords, username, password, source)

    def _check_password(
        self, passwords: PasswordChecker, username: str, password: str, source: str | None
    ) -> UserInfo:
        """bcrypt, behind the failed-login throttle; a success is remembered."""
        throttle = self._throttle
        wait = throttle.acquire(source, username) if throttle is not None else None
        if wait is not None:
            raise TooManyFailedLogins(wait)
        if not passwords.verify(username, password):
            raise Unauthenticated("invalid username or password")  # the check stays spent
        if throttle is not None:
            throttle.release(source, username)
        user = authenticated(username, ())
        self._password_ok.put(_password_key(username, password), user, None)
        return user

    def issue_token(self, user: UserInfo, ttl_seconds: int) -> tuple[str, datetime]:
        """A JWT standing for `user` (the registry token endpoint hands these out)."""
        groups = [g for g in user.groups if g != "system:authenticated"]
        from_file = self._passwords is not None and self._passwords.has_user(user.username)
        return self._signer.issue(
            user.username,
            groups=groups,
            audiences=[self._audience],
            expires_in_seconds=ttl_seconds,
            extra_claims={IDP_CLAIM: IDP_HTPASSWD} if from_file else None,
        )


@dataclass(frozen=True)
class Credentials:
    """What an `Authorization` header presents: a Bearer token (`username` None) or Basic
    credentials (`secret` is the password, which may itself be a token)."""

    secret: str
    username: str | None = None


def credentials(authorization: str | None) -> Credentials | None:
    """The one reading of an `Authorization` header, for every authenticator: None when
    there is none (the anonymous user); `Unauthenticated` for another scheme, an empty
    value or malformed Basic credentials (not base64 of UTF-8 `user:password`, or no
    password)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Credentials(value)
    if scheme.lower() != "basic" or not value:
        raise Unauthenticated("unsupported authorization scheme")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("malformed basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep or not password:
        raise Unauthenticated("malformed basic credentials")
    return Credentials(password, username)


def _password_key(username: str, password: str) -> str:
    return hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
