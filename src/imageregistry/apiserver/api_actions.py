"""What a Kubernetes-style API request asks, known before anyone is authenticated.

This is kube-apiserver's RequestInfo as its authorizer reads it. A resource request
comes down to a verb plus a group, resource, subresource, namespace and name. A
non-resource request (discovery, OpenAPI) comes down to a verb on a URL path. Every route
of the API's route table (`api_routes.py`) declares how its `ApiAction` is derived, and
the dispatcher (`api_dispatch.py`) authorizes that action, and only that action, before the
route's handler runs. `ApiAction.attributes(user)` turns it into the access review
(`auth.identity.Attributes`) that the one authorizer decides: local RBAC, or a
SubjectAccessReview in cluster mode.

`Target` and `resolve_target` map the path of a resource request to the handler that serves
it. Unlike kube, which parses paths without knowing its resources, this server asks its
own resource catalogue, so `namespaces/NS/finalize` stays a subresource of `namespaces`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from imageregistry.apiserver.resource import ResourceHandler
from imageregistry.apiserver.status import ApiError, method_not_allowed
from imageregistry.auth.identity import Attributes, UserInfo

# kube's verbs for a method on a collection or an object (RequestInfo.Verb)
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class ApiAction:
    """The access review a request needs, without the user."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # set for a non-resource request only

    @classmethod
    def on_path(cls, verb: str, path: str) -> ApiAction:
        return cls(verb, path=path)

    @property
    def is_resource_request(self) -> bool:
        return not self.path

    def attributes(self, user: UserInfo) -> Attributes:
        if not self.is_resource_request:
            return Attributes.for_path(user, self.verb, self.path)
        return Attributes.for_resource(
            user,
            self.verb,
            self.group,
            self.resource,
            subresource=self.subresource,
            name=self.name,
            namespace=self.namespace,
        )


@dataclass(frozen=True)
class Target:
    """The resource a request under `/api/v1` or `/apis/GROUP/v1` names."""

    handler: ResourceHandler
    namespace: str
    name: str
    sub: str


def resolve_target(
    by_name: Mapping[tuple[str, str], ResourceHandler], group: str, segments: list[str]
) -> Target:
    """`[namespaces, NS,] plural [, name [, subresource]]` of `group`, or 404 NotFound."""
    namespace = ""
    if len(segments) >= 3 and segments[0] == "namespaces":
        candidate = by_name.get((group, segments[2]))
        if candidate is not None and candidate.info.namespaced:
            namespace, segments = segments[1], segments[2:]
    if not segments or len(segments) > 3:
        raise not_found()
    handler = by_name.get((group, segments[0]))
    if handler is None or (namespace and not handler.info.namespaced):
        raise not_found()
    name = segments[1] if len(segments) > 1 else ""
    sub = segments[2] if len(segments) > 2 else ""
    if sub and sub not in handler.subresources:
        raise not_found()
    return Target(handler, namespace, name, sub)


def resource_verb(method: str, target: Target, watch: bool) -> str:
    """kube's verb for `method` on `target`: get/list/watch, create, update, patch, delete,
    deletecollection. Any other method, or a POST to a named object, is 405."""
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if watch else "list"
    if method not in _WRITE_VERBS:
        raise method_not_allowed(method, target.handler.info.plural)
    if method == "DELETE" and not target.name:
        return "deletecollection"
    if method == "POST" and target.name and not target.sub:
        raise method_not_allowed(method, target.handler.info.plural)
    return _WRITE_VERBS[method]


def resource_action(target: Target, verb: str) -> ApiAction:
    info = target.handler.info
    return ApiAction(
        verb,
        info.group,
        info.plural,
        subresource=target.sub,
        namespace=target.namespace,
        name=target.name,
    )


@dataclass(frozen=True)
class ApiPath:
    """A request's path: as sent, without its trailing slash, and split into segments."""

    raw: str
    text: str
    parts: tuple[str, ...]

    @classmethod
    def of(cls, raw: str) -> ApiPath:
        text = raw.rstrip("/") or "/"
        return cls(raw, text, tuple(p for p in text.split("/") if p))


@dataclass(frozen=True)
class PathMatch:
    """What a route found in a path for its handler."""

    path: ApiPath
    namespace: str = ""  # a usage report's namespace ("" = cluster-wide)
    target: Target | None = None  # a resource route's resource


@dataclass(frozen=True)
class ApiRequestInfo:
    """A request as the route table resolved it: the route, the action it needs, and what
    its handler serves."""

    route: str
    action: ApiAction
    match: PathMatch


@dataclass(frozen=True)
class AuthorizedRequest:
    """What a handler of the API receives: the dispatcher has authenticated `user` (after any
    impersonation) and authorized `info.action` for it."""

    request: Request
    user: UserInfo
    info: ApiRequestInfo


Handler = Callable[[AuthorizedRequest], Awaitable[Response]]
RouteMatch = Callable[[Request, ApiPath], PathMatch | None]
RouteAction = Callable[[Request, PathMatch], ApiAction]


@dataclass(frozen=True)
class ApiRoute:
    """One entry of the API's route table (`api_routes.py`).

    `match` says whether the route serves a request. It returns None to pass the request to
    the next route, and raises `ApiError` for a request that is this route's but that it
    cannot serve (404 for an unknown resource). `action` declares the access review the
    request needs. It may raise 405 for a method the route does not serve. `handler` runs
    only after the dispatcher has authorized that action."""

    name: str
    match: RouteMatch
    action: RouteAction
    handler: Handler
