"""The request chain of the two OCI surfaces, and what their route tables declare.

`/v2/` (`oci.v2_routes`) and the signature extension `/extensions/v2/`
(`oci.extension_routes`) each have one table of `Route`s and one dispatcher that runs the
same chain for every request (docs/architecture.md#request-pipelines):

    match a route and method → authenticate and authorize the endpoint's declared `access`
    (`authorize`, through `oci.gate.RegistryGate`) → call the handler with an authorized
    `Ctx` → render any exception with `oci.errors.render`

Handlers never take the request's own decision: by the time one runs, the caller passed
the review its route declares. A handler that needs a second review (a mount's pull of the
source repository, a pushed cosign signature's signing right) asks for it through
`Ctx.also_allowed`, and only for an action its `Endpoint.secondary` declares; such a check
answers yes or no and never replaces the request's own decision in the request record.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.auth.identity import UserInfo, anonymous
from imageregistry.content.digest import InvalidDigest
from imageregistry.content.reference import InvalidTag, parse_manifest_reference
from imageregistry.metadata.manifest_pull import PulledManifest
from imageregistry.metadata.registry import RepoKey
from imageregistry.oci.context import Ctx
from imageregistry.oci.errors import RegistryError
from imageregistry.oci.gate import RegistryGate, challenge_headers
from imageregistry.oci.pull import ManifestPull, Refused


@dataclass(frozen=True)
class Public:
    """No authentication and no review here: the endpoint is the realm itself (`/v2/token`
    checks the credentials it is given and answers in its own terms)."""

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return ()


@dataclass(frozen=True)
class Authenticated:
    """Any caller who is not anonymous; no access review. The `/v2/` ping: its 401 and
    challenge tell a client to log in before it asks for anything."""

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return ()


@dataclass(frozen=True)
class Review:
    """The request's own access review: `action` on the path's repository (on the
    registry for a route without one, the catalog)."""

    action: RegistryAction

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return (self.action,)


@dataclass(frozen=True)
class ReviewByReference:
    """A review chosen by the path's manifest reference: `tag` for a tag, `digest` for a
    digest. The reference is parsed first, so a malformed one is refused as such before
    any review (a manifest DELETE: a tag delete and an image delete are different rights)."""

    tag: RegistryAction
    digest: RegistryAction

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return (self.tag, self.digest)


@dataclass(frozen=True)
class PullReview:
    """The pull review of a manifest GET/HEAD, taken by the one manifest pull
    (`oci.pull.ManifestPull.pull`) in the same worker-thread hop as the manifest lookup,
    with the same authorizer (and, with local RBAC, at the RBAC version that lookup read,
    which saves a query). The handler gets the pulled manifest, or why there is none, in
    `Ctx.pulled`. A reference that is neither a tag nor a digest names no manifest: it
    takes a plain pull review, and `Ctx.pulled` is None."""

    @property
    def actions(self) -> tuple[RegistryAction, ...]:
        return (RegistryAction.PULL,)


Access = Public | Authenticated | Review | ReviewByReference | PullReview
PUBLIC = Public()
AUTHENTICATED = Authenticated()


@dataclass(frozen=True)
class Endpoint:
    """One method of a route: its handler, the access the dispatcher authorizes before
    calling it, and the secondary reviews the handler may ask for (`Ctx.also_allowed`)."""

    handler: Callable[[Ctx], Awaitable[Response]]
    access: Access
    secondary: tuple[RegistryAction, ...] = ()


@dataclass(frozen=True)
class Route:
    """A path shape of a surface. `template` is the shape as the request metrics name it
    (`observability.routes`; never a client-chosen segment); `pattern` matches the raw
    path and names the repository (`name`) and the last segment (`arg`) when it has them."""

    template: str
    pattern: re.Pattern[str]
    endpoints: Mapping[str, Endpoint]

    @property
    def names_repository(self) -> bool:
        return "name" in self.pattern.groupindex


@dataclass(frozen=True)
class Grant:
    """What the authorization step established: the caller and, for `PullReview`, the
    pull's answer."""

    user: UserInfo
    pulled: PulledManifest | Refused | None = None


def find_endpoint(
    routes: Sequence[Route], request: Request, path: str, surface: str
) -> tuple[Route, re.Match[str], Endpoint]:
    """The first route whose pattern matches `path` (the table's order decides) and its
    endpoint for the request's method: `NAME_UNKNOWN` for a path no route has (naming
    `surface`), `UNSUPPORTED` with the route's methods for any other method."""
    for route in routes:
        found = route.pattern.match(path)
        if found is not None:
            endpoint = route.endpoints.get(request.method)
            if endpoint is None:
                raise unsupported(request, sorted(route.endpoints))
            return route, found, endpoint
    raise RegistryError("NAME_UNKNOWN", f"no {surface} endpoint at {path[:200]!r}")


async def authorize(
    gate: RegistryGate,
    pull: ManifestPull,
    request: Request,
    access: Access,
    repo: RepoKey | None,
    arg: str,
) -> Grant:
    """Authenticate the caller and take the review `access` declares, or raise the
    refusal (401 with a challenge to an anonymous caller, 403 `DENIED` otherwise; refused
    credentials 401, throttled ones 429)."""
    if isinstance(access, Public):
        return Grant(anonymous())
    if isinstance(access, Authenticated):
        user = await gate.user(request)
        if user.is_anonymous:
            raise RegistryError(
                "UNAUTHORIZED", headers=challenge_headers(request, gate.origin, None, None)
            )
        return Grant(user)
    if isinstance(access, Review):
        return Grant(await gate.authorize(request, access.action, repo))
    if isinstance(access, ReviewByReference):
        ref = parse_manifest_reference(arg)  # a malformed reference is refused first
        action = access.tag if ref.tag is not None else access.digest
        return Grant(await gate.authorize(request, action, repo))
    return await _pull(gate, pull, request, repo, arg)


async def _pull(
    gate: RegistryGate, pull: ManifestPull, request: Request, repo: RepoKey | None, arg: str
) -> Grant:
    action = RegistryAction.PULL
    if repo is None:  # a route table error, not a request's
        raise TypeError("a pull review needs a repository in the route")
    try:
        ref = parse_manifest_reference(arg)
    except (InvalidTag, InvalidDigest):
        return Grant(await gate.authorize(request, action, repo))
    digest, tag = (str(ref.digest) if ref.digest else None), ref.tag
    record = request.method != "HEAD"  # a HEAD is no pull to note
    user, pulled = await gate.run_as(
        request, action, repo, lambda user: pull.pull(user, repo, digest, tag, record=record)
    )
    if isinstance(pulled, Refused) and pulled.denied:
        raise gate.refusal(request, user, action, repo)
    return Grant(user, pulled)


class PrefixRoute(StarletteRoute):
    """Every request at `prefix` or below it, whatever its method or decoded path, so the
    surface's dispatcher answers unknown methods and paths with the OCI envelope.
    Starlette's `{rest:path}` pattern stops at a newline (`/v2/a%0a/b` would get a
    plain-text 404) and its method check answers a plain-text 405."""

    def __init__(self, prefix: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(prefix, endpoint)
        self.methods = None  # (Starlette defaults a function endpoint to GET only)
        self.path_regex = re.compile(rf"^{re.escape(prefix)}(?:/.*)?$", re.DOTALL)


def raw_path(request: Request) -> str:
    """The path as sent (percent-encoding kept), without the query: routing on it means a
    percent-encoded or dot-dot name is never normalised into another repository."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes | bytearray) and raw:
        return bytes(raw).split(b"?", 1)[0].decode("latin-1")
    return request.url.path


def unsupported(request: Request, allow: Sequence[str]) -> RegistryError:
    return RegistryError(
        "UNSUPPORTED",
        f"method {request.method} is not supported here",
        headers={"Allow": ", ".join(allow)},
    )
