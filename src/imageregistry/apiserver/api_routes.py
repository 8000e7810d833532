"""The route table of the Kubernetes-style API: every path under `/api`, `/apis` and `/openapi`.

Each route declares the action its requests need, and the dispatcher (`api_dispatch.py`)
authorizes that action before the handler runs. The first route that matches serves the
request:

- image usage, `/apis/image.alauda.io/v1[/namespaces/NS]/imageusages` (GET, HEAD), and
  image stream usage, the same with `imagestreamusages`: `list images` for the cluster-wide
  report, `list imagestreams` in NS for a namespace's.
- discovery, `/api`, `/api/v1`, `/apis`, `/apis/GROUP[/VERSION]`, and openapi,
  `/openapi/...`: `get` on the request's path (a non-resource request; other methods 405).
- resource, `/api/v1/...` and `/apis/GROUP/v1/...`: derived from the request like kube's
  RequestInfo. The verb comes from the method: get, list, watch (`?watch=true`), create,
  update, patch, delete, deletecollection. The resource, subresource, namespace and name
  come from the path.

No route of this surface is public. Discovery and OpenAPI need `get` on their path, which
the bootstrap ClusterRole `system:discovery` grants to everyone, anonymous callers included
(docs/behaviour.md#bootstrap-roles). `/version` and the health endpoints are not part of
this surface (`server.py`). A usage path with another method or a trailing slash is not a
usage route: the resource route answers it 404.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from imageregistry.apiserver.api_actions import (
    ApiAction,
    ApiPath,
    ApiRoute,
    PathMatch,
    RouteMatch,
    resolve_target,
    resource_action,
    resource_verb,
)
from imageregistry.apiserver.api_dispatch import ApiDispatcher
from imageregistry.apiserver.api_endpoints import ApiEndpoints
from imageregistry.apiserver.catalog import build_handlers
from imageregistry.apiserver.collaborators import ApiCollaborators
from imageregistry.apiserver.resource import ResourceHandler
from imageregistry.apiserver.status import method_not_allowed
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.services import Services

__all__ = ["api_collaborators", "api_route_table", "api_routes"]

USAGE_METHODS = frozenset({"GET", "HEAD"})


# --- usage reports -----------------------------------------------------------------------


def _usage_path(plural: str) -> re.Pattern[str]:
    group = re.escape(IMAGE_GROUP)
    return re.compile(rf"/apis/{group}/v1(?:/namespaces/(?P<namespace>[^/]+))?/{plural}")


def usage_match(plural: str) -> RouteMatch:
    pattern = _usage_path(plural)

    def match(request: Request, path: ApiPath) -> PathMatch | None:
        found = pattern.fullmatch(path.raw)
        if found is None or request.method not in USAGE_METHODS:
            return None
        return PathMatch(path, namespace=found["namespace"] or "")

    return match


def usage_action(_request: Request, match: PathMatch) -> ApiAction:
    """The cluster-wide report needs `list images`; a namespace's, `list imagestreams` there."""
    if not match.namespace:
        return ApiAction("list", IMAGE_GROUP, "images")
    return ApiAction("list", IMAGE_GROUP, "imagestreams", namespace=match.namespace)


# --- discovery and OpenAPI ---------------------------------------------------------------


def discovery_match(_request: Request, path: ApiPath) -> PathMatch | None:
    parts = path.parts
    if parts in (("api",), ("api", "v1")) or (parts[:1] == ("apis",) and len(parts) <= 3):
        return PathMatch(path)
    return None


def openapi_match(_request: Request, path: ApiPath) -> PathMatch | None:
    return PathMatch(path) if path.parts[:1] == ("openapi",) else None


def get_on_path(request: Request, match: PathMatch) -> ApiAction:
    """A non-resource request: only GET is served, and it needs `get` on its URL path."""
    if request.method != "GET":
        raise method_not_allowed(request.method, match.path.text)
    return ApiAction.on_path("get", match.path.text)


# --- resources ---------------------------------------------------------------------------


def resource_match(by_name: dict[tuple[str, str], ResourceHandler]) -> RouteMatch:
    def match(_request: Request, path: ApiPath) -> PathMatch | None:
        parts = path.parts
        if parts[:2] == ("api", "v1"):
            group, rest = "", parts[2:]
        elif parts[:1] == ("apis",) and len(parts) > 2 and parts[2] == "v1":
            group, rest = parts[1], parts[3:]
        else:
            return None
        return PathMatch(path, target=resolve_target(by_name, group, list(rest)))

    return match


def action_from_request(request: Request, match: PathMatch) -> ApiAction:
    """kube's RequestInfo: the verb from the method (and `?watch`), the rest from the path."""
    assert match.target is not None
    watch = request.query_params.get("watch") in ("true", "1")
    return resource_action(match.target, resource_verb(request.method, match.target, watch))


# --- the table ---------------------------------------------------------------------------


def api_route_table(endpoints: ApiEndpoints) -> tuple[ApiRoute, ...]:
    by_name = {(h.info.group, h.info.plural): h for h in endpoints.handlers}
    return (
        ApiRoute("image usage", usage_match("imageusages"), usage_action, endpoints.image_usage),
        ApiRoute(
            "image stream usage",
            usage_match("imagestreamusages"),
            usage_action,
            endpoints.stream_usage,
        ),
        ApiRoute("discovery", discovery_match, get_on_path, endpoints.document),
        ApiRoute("openapi", openapi_match, get_on_path, endpoints.document),
        ApiRoute("resource", resource_match(by_name), action_from_request, endpoints.resource),
    )


def api_collaborators(services: Services) -> ApiCollaborators:
    """The one place in `apiserver` that takes the server's `Services` apart
    (docs/architecture.md#wiring): the rest of the surface reads the named fields."""
    return ApiCollaborators(
        db=services.db,
        authn=services.authn,
        authz=services.authz,
        clock=services.clock,
        changes=services.changes,
        watches=services.watches,
        pruner=services.pruner,
        cluster_mode=services.settings.auth_mode == "kubernetes",
        registry_host=services.settings.registry_host,
    )


def api_routes(services: Services) -> list[BaseRoute]:
    """The Starlette routes that hand every request of this surface to its dispatcher."""
    api = api_collaborators(services)
    endpoints = ApiEndpoints(api, build_handlers(api))
    dispatcher = ApiDispatcher(api, api_route_table(endpoints))
    # HEAD and OPTIONS too, so that they get a 405 Status rather than Starlette's plain text
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route("/api", dispatcher.handle, methods=methods),
        Route("/api/{rest:path}", dispatcher.handle, methods=methods),
        Route("/apis", dispatcher.handle, methods=methods),
        Route("/apis/{rest:path}", dispatcher.handle, methods=methods),
        Route("/openapi/{rest:path}", dispatcher.handle, methods=methods),
    ]
