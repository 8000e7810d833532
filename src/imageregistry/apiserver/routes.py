"""HTTP surface of the Kubernetes-style API: path parsing, verbs, content negotiation.

Every `/api`, `/apis` and `/openapi` request goes through `ApiServer.handle`: authenticate
(401), impersonate (403 without the `impersonate` verb), map the URL to (group, resource,
namespace, name, subresource) and the method to a Kubernetes verb, authorize with RBAC
(403 Status naming user, verb and resource), then call the resource handler in a worker
thread (the metadata layer is synchronous). Handlers raise `ApiError`; this is the one place
that turns it into a `Status` body. Responses are JSON; `as=Table` requests get server-side
tables (docs/kubectl.md#table-output).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from imageregistry.apiserver import discovery, openapi
from imageregistry.apiserver.catalog import build_handlers
from imageregistry.apiserver.codec import MAX_BODY_BYTES
from imageregistry.apiserver.dispatch import Dispatcher, Target
from imageregistry.apiserver.request_context import authorize_request, identify
from imageregistry.apiserver.resource import RequestContext, ResourceHandler
from imageregistry.apiserver.resources.namespaces import record_cluster_namespace
from imageregistry.apiserver.responses import json_response, render
from imageregistry.apiserver.status import (
    ApiError,
    bad_request,
    method_not_allowed,
    service_unavailable,
    too_many_requests,
)
from imageregistry.apiserver.watch import WatchResponse, WatchStream
from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.changefeed import WatchLimitExceeded
from imageregistry.frontproxy.middleware import front_proxy_user
from imageregistry.httpinput import client_host, parse_int, read_body
from imageregistry.services import Services

# Deleting these ends the tokens of the service accounts in them (authn.py's cache).
IDENTITY_HOLDERS = {("", "serviceaccounts"), ("", "namespaces")}

MAX_WATCH_SECONDS = 1800
WATCH_RETRY_AFTER = 5  # seconds a client over a watch cap is asked to wait


class ApiServer:
    def __init__(self, services: Services, handlers: Sequence[ResourceHandler]) -> None:
        self.services = services
        self.handlers = list(handlers)
        self.by_name = {(h.info.group, h.info.plural): h for h in handlers}
        self.cluster_mode = services.settings.auth_mode == "kubernetes"

    # --- identity --------------------------------------------------------------------

    def identify(self, request: Request) -> UserInfo:
        return identify(
            self.services.authn,
            self.services.authz,
            request.headers,
            client_host(request.scope),
            front_proxy_user(request.scope),
        )

    # --- path parsing ----------------------------------------------------------------

    def resolve(self, group: str, segments: list[str]) -> Target:
        namespace = ""
        if len(segments) >= 3 and segments[0] == "namespaces":
            candidate = self.by_name.get((group, segments[2]))
            if candidate is not None and candidate.info.namespaced:
                namespace, segments = segments[1], segments[2:]
        if not segments or len(segments) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        handler = self.by_name.get((group, segments[0]))
        if handler is None or (namespace and not handler.info.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = segments[1] if len(segments) > 1 else ""
        sub = segments[2] if len(segments) > 2 else ""
        if sub and sub not in handler.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(handler, namespace, name, sub)

    # --- entry point -----------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            user = await run_in_threadpool(self.identify, request)
            return await self._dispatch(request, user)
        except Exception as exc:
            return render(exc)

    async def _dispatch(self, request: Request, user: UserInfo) -> Response:
        path = request.url.path.rstrip("/") or "/"
        if "\x00" in path or any("\x00" in v for v in request.query_params.values()):
            # names and selectors reach SQL, and PostgreSQL text cannot hold U+0000
            raise bad_request("the request path and query may not contain the character U+0000")
        parts = [p for p in path.split("/") if p]
        if (
            parts[0] == "openapi"
            or len(parts) <= 1
            or (parts[0] == "apis" and len(parts) <= 3)
            or (parts[:2] == ["api", "v1"] and len(parts) == 2)
        ):
            return await self._non_resource(request, user, parts, path)
        if parts[0] == "api" and parts[1] == "v1":
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and parts[2] == "v1":
            group, rest = parts[1], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        target = self.resolve(group, rest)
        return await self._resource(request, user, target)

    async def _non_resource(
        self, request: Request, user: UserInfo, parts: list[str], path: str
    ) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method, path)
        await run_in_threadpool(
            authorize_request, self.services.authz, Attributes.for_path(user, "get", path), "", ""
        )
        if parts in (["api"], ["apis"]) and discovery.wants_aggregated(
            request.headers.get("accept", "")
        ):
            listing = discovery.aggregated(parts == ["api"], self.handlers)
            return Response(
                json.dumps(listing, separators=(",", ":")),
                200,
                {"Vary": "Accept"},
                media_type=discovery.AGGREGATED_TYPE,
            )
        body = self._document(parts, request)
        if body is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return json_response(body)

    def _document(self, parts: list[str], request: Request) -> dict[str, Any] | None:
        if parts == ["api"]:
            return discovery.api_versions(request.url.netloc)
        if parts == ["api", "v1"]:
            return discovery.resource_list("", self.handlers)
        if parts == ["apis"]:
            return discovery.api_group_list(self.handlers)
        if parts[0] == "apis" and parts[1] in discovery.groups(self.handlers):
            if len(parts) == 2:
                return discovery.api_group(parts[1])
            if parts[2] == "v1":
                return discovery.resource_list(parts[1], self.handlers)
        if parts == ["openapi", "v3"]:
            return openapi.index(self.handlers)
        if parts[0] == "openapi" and len(parts) > 2 and parts[1] == "v3":
            return openapi.document_for("/".join(parts[2:]), self.handlers)
        return None

    # --- resources -------------------------------------------------------------------

    def _verb(self, request: Request, target: Target) -> str:
        method = request.method
        if method == "GET":
            if target.name:
                return "get"
            return "watch" if request.query_params.get("watch") in ("true", "1") else "list"
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method not in verbs:
            raise method_not_allowed(method, target.handler.info.plural)
        if method == "DELETE" and not target.name:
            return "deletecollection"
        if method == "POST" and target.name and not target.sub:
            raise method_not_allowed(method, target.handler.info.plural)
        return verbs[method]

    async def _resource(self, request: Request, user: UserInfo, target: Target) -> Response:
        verb = self._verb(request, target)
        info = target.handler.info
        attrs = Attributes.for_resource(
            user,
            verb,
            info.group,
            info.plural,
            subresource=target.sub,
            name=target.name,
            namespace=target.namespace,
        )
        await run_in_threadpool(
            authorize_request, self.services.authz, attrs, info.plural, info.group
        )
        query = request.query_params
        dry_run = "All" in query.getlist("dryRun")
        ctx = RequestContext(
            user, self.services.authz, self.services.clock, dry_run, query.get("fieldManager", "")
        )
        if self.cluster_mode and target.namespace and verb in ("create", "update", "patch"):
            await run_in_threadpool(
                record_cluster_namespace, self.services.db, target.namespace, self.services.clock
            )
        has_body = request.method in ("POST", "PUT", "PATCH", "DELETE")
        raw = await read_body(request, MAX_BODY_BYTES) if has_body else b""
        dispatcher = Dispatcher(target.handler, ctx, request, self.services)
        if verb == "watch":
            return self._watch(target, ctx, dispatcher, request)
        response = await run_in_threadpool(dispatcher.run, verb, target, raw)
        if verb in ("delete", "deletecollection") and (info.group, info.plural) in IDENTITY_HOLDERS:
            self.services.authn.forget_cached_identities()
        return response

    def _watch(
        self, target: Target, ctx: RequestContext, dispatcher: Any, request: Request
    ) -> Response:
        info = target.handler.info
        if "watch" not in info.verbs:
            # the stream would fail only after its 200 headers are sent
            raise method_not_allowed("watch", info.plural)
        query = request.query_params
        stream = WatchStream(
            self.services.db,
            self.services.changes,
            target.handler,
            ctx,
            target.namespace,
            dispatcher.list_options(),
            dispatcher.watch_renderer(),
            bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
        )
        timeout = _timeout_seconds(query.get("timeoutSeconds") or "")
        if not self.services.changes.is_running:
            raise service_unavailable("watch is not available while the server starts or stops")
        try:  # the last step: nothing may fail between taking the slot and the response
            slot = self.services.watches.admit(ctx.user.username)
        except WatchLimitExceeded as exc:
            raise too_many_requests(str(exc), WATCH_RETRY_AFTER) from None
        return WatchResponse(stream.events(timeout), slot)


def _timeout_seconds(text: str) -> float:
    """A watch's `timeoutSeconds`: a non-negative integer, as in kube's ListOptions (int64);
    0 or absent means the server default."""
    seconds = parse_int(text or "0", "timeoutSeconds")
    return float(min(seconds, MAX_WATCH_SECONDS) or MAX_WATCH_SECONDS)


def api_routes(services: Services) -> list[BaseRoute]:
    server = ApiServer(services, build_handlers(services))
    # HEAD and OPTIONS too, so that they get a 405 Status rather than Starlette's plain text
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route("/api", server.handle, methods=methods),
        Route("/api/{rest:path}", server.handle, methods=methods),
        Route("/apis", server.handle, methods=methods),
        Route("/apis/{rest:path}", server.handle, methods=methods),
        Route("/openapi/{rest:path}", server.handle, methods=methods),
    ]


__all__ = ["ApiServer", "api_routes", "bad_request"]
