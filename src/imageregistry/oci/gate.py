"""Registry authentication and the one authorization decision every `/v2/` request takes.

`RegistryGate.authorize` authenticates the `Authorization` header (Bearer, or Basic whose
password is a token or an htpasswd password), turns the request into access-review
attributes with `registry_attributes` (docs/behaviour.md#access-control) and asks the configured
`Authorizer`. Anonymous callers that are refused get 401 with a `WWW-Authenticate` Bearer
challenge naming the token endpoint (and Basic, which clients may also use);
authenticated callers that are refused get 403 `DENIED`. The realm itself, `/v2/token`
(GET and the OAuth2 POST), is `oci/token.py`. Failed password checks are throttled per
source and user (`auth/throttle.py`): `429`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imageregistry.auth.authn import Authenticator, TooManyFailedLogins, Unauthenticated
from imageregistry.auth.authorizer import Authorizer, RegistryAction, Verdict, registry_attributes
from imageregistry.auth.identity import GROUP_MASTERS, Attributes, UserInfo, anonymous
from imageregistry.httpinput import client_host
from imageregistry.metadata.registry import RepoKey
from imageregistry.observability.requestinfo import (
    note_decision,
    note_unauthenticated,
    note_user,
)
from imageregistry.oci.errors import RegistryError

T = TypeVar("T")

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


@dataclass(frozen=True)
class Origin:
    """The settings a challenge's realm is made of: `public_url` ("" = derive it from the
    request's host) and `listen`, the fallback for a host header that is not one."""

    public_url: str
    listen: str


def server_url(request: Request, origin: Origin) -> str:
    """How this client reaches us: the configured public URL, else the request's host."""
    if origin.public_url:
        return origin.public_url.rstrip("/")
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        # The Host header is reflected into the challenge's quoted realm; a value outside
        # RFC 3986 host[:port] (quotes, spaces, junk) would break the header's syntax.
        host = origin.listen
    return f"{request.url.scheme}://{host}"


def challenge_headers(
    request: Request, origin: Origin, action: RegistryAction | None, repo: RepoKey | None
) -> dict[str, str]:
    realm = f"{server_url(request, origin)}/v2/token"
    value = f'Bearer realm="{realm}",service="{SERVICE}"'
    if action is RegistryAction.CATALOG:
        value += ',scope="registry:catalog:*"'
    elif action is not None and repo is not None:
        value += f',scope="repository:{repo}:{_SCOPE_ACTIONS[action]}"'
    return {"WWW-Authenticate": value}


class RegistryGate:
    """Authentication plus the single authorization seam of the registry.

    `cluster_namespaces`: namespaces are the cluster's (`auth_mode` "kubernetes"), so an
    authorized push may record one this registry has not seen (`may_create_namespace`)."""

    def __init__(
        self, authn: Authenticator, authz: Authorizer, origin: Origin, cluster_namespaces: bool
    ) -> None:
        self.authn = authn
        self.authz = authz
        self.origin = origin
        self.cluster_namespaces = cluster_namespaces

    def _authenticate(self, header: str | None, source: str | None) -> UserInfo:
        return self.authn.authenticate(header, source=source) if header else anonymous()

    def _decide(
        self,
        cached: UserInfo | None,
        header: str | None,
        source: str | None,
        attrs_for: _AttrsFor,
    ) -> tuple[UserInfo, Attributes | None, Verdict | None]:
        """Authenticate (unless already done) and authorize in one worker-thread hop."""
        user = cached if cached is not None else self._authenticate(header, source)
        attrs = attrs_for(user)
        return user, attrs, None if attrs is None else self.authz.authorize(attrs)

    async def _run(
        self, request: Request, attrs_for: _AttrsFor
    ) -> tuple[UserInfo, Attributes | None, Verdict | None]:
        cached = getattr(request.state, "registry_user", None)
        cached = cached if isinstance(cached, UserInfo) else None
        header = request.headers.get("authorization")
        try:
            user, attrs, verdict = await run_in_threadpool(
                self._decide, cached, header, client_host(request.scope), attrs_for
            )
        except (TooManyFailedLogins, Unauthenticated) as exc:
            raise self._refused_credentials(request, exc, header, attrs_for) from None
        request.state.registry_user = user
        note_user(user)
        return user, attrs, verdict

    def _refused_credentials(
        self, request: Request, exc: Unauthenticated, header: str | None, attrs_for: _AttrsFor
    ) -> RegistryError:
        _note_refused(header, attrs_for)
        if isinstance(exc, TooManyFailedLogins):
            return too_many_logins(exc)
        return RegistryError(
            "UNAUTHORIZED",
            f"authentication failed: {exc}",
            headers=challenge_headers(request, self.origin, None, None),
        )

    async def run_as(
        self,
        request: Request,
        action: RegistryAction,
        repo: RepoKey,
        work: Callable[[UserInfo], T],
    ) -> tuple[UserInfo, T]:
        """Authenticate, then `work(user)` in the same worker-thread hop, for a handler
        whose decision `work` takes itself with the same authorizer (the manifest pull,
        `oci.pull`); the caller turns a refusal into an error with `refusal`."""
        header = request.headers.get("authorization")
        source = client_host(request.scope)

        def step() -> tuple[UserInfo, T]:
            user = self._authenticate(header, source)
            return user, work(user)

        try:
            user, result = await run_in_threadpool(step)
        except (TooManyFailedLogins, Unauthenticated) as exc:
            attrs_for = _attributes(action, repo)
            raise self._refused_credentials(request, exc, header, attrs_for) from None
        request.state.registry_user = user
        return user, result

    def refusal(
        self, request: Request, user: UserInfo, action: RegistryAction, repo: RepoKey | None
    ) -> RegistryError:
        """The error for a refused decision: 401 with a challenge to an anonymous caller
        (who may log in), 403 `DENIED` to everyone else."""
        if user.is_anonymous:
            return RegistryError(
                "UNAUTHORIZED", headers=challenge_headers(request, self.origin, action, repo)
            )
        target = f" on {repo}" if repo else ""
        return RegistryError("DENIED", f"user {user.username!r} may not {action.value}{target}")

    def may_create_namespace(self, user: UserInfo) -> bool:
        """Whether a push by `user` (already authorized) may record a namespace this
        registry has not seen: in cluster mode namespaces are the cluster's, so the
        cluster's yes to the push is enough; otherwise only a cluster-admin's."""
        return self.cluster_namespaces or may_create_namespace(user)

    async def user(self, request: Request) -> UserInfo:
        user, _attrs, _verdict = await self._run(request, lambda _user: None)
        return user

    async def allowed(self, request: Request, action: RegistryAction, repo: RepoKey | None) -> bool:
        """A secondary check (a mount's source, a push's signature): not the request's own
        decision, so not the one its audit event names."""
        _user, _attrs, verdict = await self._run(request, _attributes(action, repo))
        return verdict is not None and verdict.allowed

    async def authorize(
        self, request: Request, action: RegistryAction, repo: RepoKey | None = None
    ) -> UserInfo:
        """The one decision: (user, action, namespace, stream) → allowed, or raise."""
        user, attrs, verdict = await self._run(request, _attributes(action, repo))
        allowed = verdict is not None and verdict.allowed
        if attrs is not None and verdict is not None:
            note_decision(attrs, allowed, verdict.reason)
        if allowed:
            return user
        raise self.refusal(request, user, action, repo)


_AttrsFor = Callable[[UserInfo], Attributes | None]


def _attributes(action: RegistryAction, repo: RepoKey | None) -> _AttrsFor:
    def build(user: UserInfo) -> Attributes:
        namespace, stream = (repo.namespace, repo.name) if repo else ("", "")
        return registry_attributes(user, action, namespace, stream)

    return build


def _note_refused(header: str | None, attrs_for: _AttrsFor) -> None:
    """Refused credentials: the audit event names the claimed user, unauthenticated, and
    the access the request asked for (never decided)."""
    user = note_unauthenticated(header)
    attrs = attrs_for(user)
    if attrs is not None:
        note_decision(attrs, None)


def too_many_logins(exc: TooManyFailedLogins) -> RegistryError:
    return RegistryError("TOOMANYREQUESTS", str(exc), headers={"Retry-After": str(exc.retry_after)})


def may_create_namespace(user: UserInfo) -> bool:
    """Only a cluster-admin's push creates a namespace (docs/behaviour.md#bootstrap-roles)."""
    return user.in_group(GROUP_MASTERS)


def basic_password(header: str) -> str | None:
    """The password of a well-formed `Basic` header, else None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None
