"""Registry authentication and the one authorization decision every `/v2/` request takes.

`RegistryGate.authorize` authenticates the `Authorization` header (Bearer, or Basic whose
password is a token or an htpasswd password), turns the request into access-review
attributes with `registry_attributes` (behaviour.md §3) and asks the configured
`Authorizer`. Anonymous callers that are refused get 401 with a `WWW-Authenticate` Bearer
challenge naming the token endpoint (and Basic, which clients may also use);
authenticated callers that are refused get 403 `DENIED`. `token_endpoint` implements that
realm the way docker, skopeo and oras expect (clients.md): repeated `scope=` are accepted,
a presented token is handed back unchanged, an htpasswd login is exchanged for a JWT so
bcrypt runs once, and tokens are never narrowed to the requested scope: a token stands for
an identity, and every request is authorized on its own, so `scope`, `account` and
`offline_token` cannot widen anything. Such a JWT lives `token_ttl_seconds` and carries
`idp: htpasswd`: removing the user from the htpasswd file revokes it within a second (the
file is re-read; `auth/authn.py`), and so does a deleted service account for its tokens.
Failed password checks are throttled per source and user (`auth/throttle.py`): `429`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from imageregistry.auth.authn import TooManyFailedLogins, Unauthenticated
from imageregistry.auth.authorizer import RegistryAction, registry_attributes
from imageregistry.auth.identity import GROUP_MASTERS, Attributes, UserInfo, anonymous
from imageregistry.metadata.registry import RepoKey
from imageregistry.oci.errors import RegistryError
from imageregistry.oci.pull import AUTH_FAILURE
from imageregistry.services import Services

SERVICE = "imageregistry"
# RFC 3986 host (reg-name of letters, digits, dots and dashes, or a bracketed IPv6
# literal) with an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_SCOPE_ACTIONS = {
    RegistryAction.PULL: "pull",
    RegistryAction.PUSH: "pull,push",
    RegistryAction.DELETE_TAG: "delete",
    RegistryAction.DELETE_DIGEST: "delete",
    RegistryAction.SIGN: "push",
}


def server_url(request: Request, services: Services) -> str:
    """How this client reaches us: the configured public URL, else the request's host."""
    if services.settings.public_url:
        return services.settings.public_url.rstrip("/")
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        # The Host header is reflected into the challenge's quoted realm; a value outside
        # RFC 3986 host[:port] (quotes, spaces, junk) would break the header's syntax.
        host = services.settings.listen
    return f"{request.url.scheme}://{host}"


def challenge_headers(
    request: Request, services: Services, action: RegistryAction | None, repo: RepoKey | None
) -> dict[str, str]:
    realm = f"{server_url(request, services)}/v2/token"
    value = f'Bearer realm="{realm}",service="{SERVICE}"'
    if action is RegistryAction.CATALOG:
        value += ',scope="registry:catalog:*"'
    elif action is not None and repo is not None:
        value += f',scope="repository:{repo}:{_SCOPE_ACTIONS[action]}"'
    return {"WWW-Authenticate": value}


class RegistryGate:
    """Authentication plus the single authorization seam of the registry."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _authenticate(self, header: str | None, source: str | None) -> UserInfo:
        return self.services.authn.authenticate(header, source=source) if header else anonymous()

    def _decide(
        self,
        cached: UserInfo | None,
        header: str | None,
        source: str | None,
        attrs_for: _AttrsFor,
    ) -> tuple[UserInfo, bool]:
        """Authenticate (unless already done) and authorize in one worker-thread hop."""
        user = cached if cached is not None else self._authenticate(header, source)
        attrs = attrs_for(user)
        return user, attrs is None or self.services.authz.authorize(attrs).allowed

    async def _run(self, request: Request, attrs_for: _AttrsFor) -> tuple[UserInfo, bool]:
        cached = getattr(request.state, "registry_user", None)
        cached = cached if isinstance(cached, UserInfo) else None
        try:
            failure = getattr(request.state, AUTH_FAILURE, None)
            if isinstance(failure, Unauthenticated):
                raise failure  # the pull fast path already checked these credentials
            user, allowed = await run_in_threadpool(
                self._decide,
                cached,
                request.headers.get("authorization"),
                client_host(request),
                attrs_for,
            )
        except TooManyFailedLogins as exc:
            raise too_many_logins(exc) from None
        except Unauthenticated as exc:
            raise RegistryError(
                "UNAUTHORIZED",
                f"authentication failed: {exc}",
                headers=challenge_headers(request, self.services, None, None),
            ) from None
        request.state.registry_user = user
        return user, allowed

    async def user(self, request: Request) -> UserInfo:
        user, _ = await self._run(request, lambda _user: None)
        return user

    async def allowed(self, request: Request, action: RegistryAction, repo: RepoKey | None) -> bool:
        _user, allowed = await self._run(request, _attributes(action, repo))
        return allowed

    async def authorize(
        self, request: Request, action: RegistryAction, repo: RepoKey | None = None
    ) -> UserInfo:
        """The one decision: (user, action, namespace, stream) → allowed, or raise."""
        user, allowed = await self._run(request, _attributes(action, repo))
        if allowed:
            return user
        if user.is_anonymous:
            raise RegistryError(
                "UNAUTHORIZED", headers=challenge_headers(request, self.services, action, repo)
            )
        target = f" on {repo}" if repo else ""
        raise RegistryError("DENIED", f"user {user.username!r} may not {action.value}{target}")


_AttrsFor = Callable[[UserInfo], Attributes | None]


def _attributes(action: RegistryAction, repo: RepoKey | None) -> _AttrsFor:
    def build(user: UserInfo) -> Attributes:
        namespace, stream = (repo.namespace, repo.name) if repo else ("", "")
        return registry_attributes(user, action, namespace, stream)

    return build


def client_host(request: Request) -> str | None:
    """The peer's address (the failed-password throttle's key); proxies are not trusted."""
    return request.client.host if request.client else None


def too_many_logins(exc: TooManyFailedLogins) -> RegistryError:
    return RegistryError("TOOMANYREQUESTS", str(exc), headers={"Retry-After": str(exc.retry_after)})


def may_create_namespace(user: UserInfo) -> bool:
    """Only a cluster-admin's push creates a missing namespace (behaviour.md §3)."""
    return user.in_group(GROUP_MASTERS)


def _basic_password(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


async def token_endpoint(request: Request, services: Services) -> JSONResponse:
    """`GET /v2/token`: the realm of the Bearer challenge."""
    header = request.headers.get("authorization", "")
    authn = services.authn
    ttl = max(60, services.settings.token_ttl_seconds)
    presented: str | None = None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        presented = value.strip()
    else:
        presented = _basic_password(header) if header else None
    try:
        if presented is not None:
            try:
                await run_in_threadpool(authn.authenticate_token, presented)
                return _token_json(presented, ttl, services.clock())
            except Unauthenticated:
                if scheme.lower() == "bearer":
                    raise
        user = await run_in_threadpool(
            functools.partial(authn.authenticate, header or None, source=client_host(request))
        )
    except TooManyFailedLogins as exc:
        raise too_many_logins(exc) from None
    except Unauthenticated as exc:
        raise RegistryError(
            "UNAUTHORIZED",
            f"authentication failed: {exc}",
            headers=challenge_headers(request, services, None, None),
        ) from None
    token, _expires = await run_in_threadpool(authn.issue_token, user, ttl)
    return _token_json(token, ttl, services.clock())


def _token_json(token: str, ttl: int, now: datetime) -> JSONResponse:
    return JSONResponse(
        {
            "token": token,
            "access_token": token,
            "expires_in": ttl,
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
