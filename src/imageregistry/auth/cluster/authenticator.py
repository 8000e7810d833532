"""Authentication by the cluster: a bearer token is whoever the cluster's `TokenReview`
says it is.

`TokenReviewAuthenticator` takes the place of the local `Authenticator` (same methods, so
every surface — `/v2/`, the token endpoint, the API, `/metrics` — uses it unchanged): a
Bearer token, or the password of Basic credentials (`skopeo --creds any:$TOKEN`), is sent
to `/apis/authentication.k8s.io/v1/tokenreviews` with the configured `audiences`. The
answer is cached like kube-apiserver's webhook token authenticator: authenticated
answers for `success_ttl`, rejections for `failure_ttl`, in a bounded LRU keyed by the
SHA-256 of the token and the audiences; transport errors and malformed answers are never
cached and refuse the request with `ClusterUnavailable` (503).

When audiences are configured, an authenticated answer must name one of them in
`status.audiences` (the TokenReview API asks audience-aware clients to check this), so a
cluster that ignores audiences cannot make a token meant for someone else good here.

The registry issues no tokens in this mode except the anonymous one its token endpoint
must hand out to clients without credentials; such a JWT, signed by the registry's own
key, is recognised locally and stands for `system:anonymous` only. Htpasswd logins and
refresh tokens do not exist in this mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from imageregistry import apigroups
from imageregistry.auth.authn import Authenticator, StoredToken, Unauthenticated, credentials
from imageregistry.auth.cluster.cache import Coalescer, DecisionCache
from imageregistry.auth.cluster.client import ClusterClient
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.identity import UserInfo, anonymous, authenticated
from imageregistry.auth.tokens import InvalidToken, TokenSigner, hash_token, looks_like_jwt

TOKENREVIEW_PATH = f"/apis/{apigroups.AUTHENTICATION}/v1/tokenreviews"
TOKENREVIEW_API_VERSION = f"{apigroups.AUTHENTICATION}/v1"


class _NoStoredTokens:
    """Cluster mode keeps no tokens of its own."""

    def lookup_token(self, token_sha256: str) -> StoredToken | None:
        return None


class TokenReviewAuthenticator(Authenticator):
    def __init__(
        self,
        client: ClusterClient,
        signer: TokenSigner,
        own_audience: str,
        audiences: Sequence[str],
        success_ttl: float,
        failure_ttl: float,
        cache_size: int,
    ) -> None:
        super().__init__(_NoStoredTokens(), signer, own_audience, cache_seconds=0)
        self._client = client
        self._audiences = tuple(audiences)
        # A rejection is cached as the error text (a user is never None in the cache).
        self._reviews: DecisionCache[UserInfo | str] = DecisionCache(
            success_ttl, failure_ttl, cache_size
        )
        self._inflight: Coalescer[UserInfo | str] = Coalescer()

    def authenticate(self, authorization: str | None, *, source: str | None = None) -> UserInfo:
        presented = credentials(authorization)
        if presented is None:
            return anonymous()
        return self.authenticate_token(presented.secret)  # Basic: the password is the token

    def cached(self, authorization: str | None) -> UserInfo | None:
        """Never: even a cached identity's authorization may need the cluster, which the
        pull fast path must not wait for on the event loop."""
        return None

    def forget_cached_identities(self) -> None:
        """Identities are the cluster's; nothing local deletes one."""

    def authenticate_password(
        self, username: str, password: str, *, source: str | None = None
    ) -> UserInfo:
        raise Unauthenticated("password logins are not available in cluster mode; use a token")

    def token_audiences(self, token: str) -> tuple[str, ...]:
        return self._audiences

    def issue_token(self, user: UserInfo, ttl_seconds: int) -> tuple[str, datetime]:
        if not user.is_anonymous:
            raise Unauthenticated("the registry issues no tokens in cluster mode")
        return super().issue_token(user, ttl_seconds)

    def authenticate_token(self, token: str) -> UserInfo:
        if looks_like_jwt(token):
            own = self._own_anonymous(token)
            if own is not None:
                return own
        key = hashlib.sha256("\0".join((hash_token(token), *self._audiences)).encode()).hexdigest()
        answer = self._reviews.get(key)
        if answer is None:
            answer = self._inflight.run(key, lambda: self._remembered_review(key, token))
        if isinstance(answer, str):
            raise Unauthenticated(answer)
        return answer

    def _remembered_review(self, key: str, token: str) -> UserInfo | str:
        """The cluster's answer (a user, or the rejection's text), remembered; a failure
        to get one raises `ClusterUnavailable` and leaves nothing behind."""
        answer = self._reviews.get(key)
        if answer is not None:
            return answer
        try:
            user = self._review(token)
        except Unauthenticated as exc:
            self._reviews.put(key, str(exc), positive=False)
            return str(exc)
        self._reviews.put(key, user, positive=True)
        return user

    def _own_anonymous(self, token: str) -> UserInfo | None:
        """The anonymous token of our own token endpoint; None for any other token."""
        try:
            claims = self.signer.verify(token, self.audience)
        except InvalidToken:
            return None
        if claims.subject != anonymous().username:
            raise Unauthenticated("tokens issued by this registry are not accepted in cluster mode")
        return anonymous()

    def _review(self, token: str) -> UserInfo:
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = list(self._audiences)
        body = {"apiVersion": TOKENREVIEW_API_VERSION, "kind": "TokenReview", "spec": spec}
        status = self._client.create(TOKENREVIEW_PATH, body).get("status")
        if not isinstance(status, dict):
            raise self._malformed("no status")
        verdict = status.get("authenticated", False)
        if not isinstance(verdict, bool):
            raise self._malformed("status.authenticated is not a boolean")
        if not verdict:
            error = status.get("error")
            raise Unauthenticated(
                f"the cluster rejected the token: {error}"
                if isinstance(error, str) and error
                else "the cluster rejected the token"
            )
        user = self._user(status.get("user"))
        if self._audiences:
            held = status.get("audiences")
            if not isinstance(held, list) or not set(self._audiences) & {
                a for a in held if isinstance(a, str)
            }:
                raise Unauthenticated("the token is not meant for this registry's audiences")
        return user

    def _user(self, raw: Any) -> UserInfo:
        if not isinstance(raw, dict):
            raise self._malformed("status.user is missing")
        username, uid = raw.get("username"), raw.get("uid", "")
        groups, extra = raw.get("groups") or [], raw.get("extra") or {}
        if not isinstance(username, str) or not username:
            raise self._malformed("status.user.username is missing")
        if not isinstance(uid, str):
            raise self._malformed("status.user.uid is not a string")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise self._malformed("status.user.groups is not a list of strings")
        if not isinstance(extra, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in extra.values()
        ):
            raise self._malformed("status.user.extra is not a map of string lists")
        if username == anonymous().username:
            return anonymous()
        return authenticated(
            username, groups, uid=uid, extra={str(k): tuple(v) for k, v in extra.items()}
        )

    def _malformed(self, what: str) -> ClusterUnavailable:
        return self._client.failure(f"malformed TokenReview answer: {what}")
